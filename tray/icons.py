"""The tray icon, drawn with Pillow for each state (no image files to ship).

A filled disc with a dark rim reads on light and dark panels alike; the glyph inside says the
state: a record (idle), two arcs (working), two bars (paused), a crossed-out wave (offline) or
an exclamation mark (error). Drawn at 4x and downsampled, so it stays crisp at 16-32 px.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

STATES = ("idle", "working", "paused", "offline", "error")
_FILL = {
    "idle": (46, 160, 110),
    "working": (40, 120, 220),
    "paused": (150, 150, 150),
    "offline": (220, 150, 30),
    "error": (210, 50, 50),
}
_RIM = (20, 20, 20)
_GLYPH = (255, 255, 255)


def draw_icon(state: str, size: int = 64) -> Image.Image:
    if state not in _FILL:
        raise ValueError(f"unknown tray state {state!r}; one of {', '.join(STATES)}")
    scale = 4
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    rim = max(2, big // 16)
    draw.ellipse((rim // 2, rim // 2, big - rim // 2 - 1, big - rim // 2 - 1), fill=_FILL[state], outline=_RIM, width=rim)
    c, u = big / 2, big / 16  # centre and unit
    if state == "idle":  # a record: a ring and a spindle
        draw.ellipse((c - 4.5 * u, c - 4.5 * u, c + 4.5 * u, c + 4.5 * u), outline=_GLYPH, width=int(1.6 * u))
        draw.ellipse((c - 1.2 * u, c - 1.2 * u, c + 1.2 * u, c + 1.2 * u), fill=_GLYPH)
    elif state == "working":  # two arcs chasing each other
        box = (c - 4.5 * u, c - 4.5 * u, c + 4.5 * u, c + 4.5 * u)
        draw.arc(box, 200, 340, fill=_GLYPH, width=int(1.8 * u))
        draw.arc(box, 20, 160, fill=_GLYPH, width=int(1.8 * u))
    elif state == "paused":
        draw.rectangle((c - 3.5 * u, c - 4 * u, c - 1.2 * u, c + 4 * u), fill=_GLYPH)
        draw.rectangle((c + 1.2 * u, c - 4 * u, c + 3.5 * u, c + 4 * u), fill=_GLYPH)
    elif state == "offline":  # a wave, struck through
        points = [(c - 5 * u + i * u, c + (1.5 * u if i % 2 else -1.5 * u)) for i in range(11)]
        draw.line(points, fill=_GLYPH, width=int(1.3 * u))
        draw.line((c - 4.5 * u, c + 4.5 * u, c + 4.5 * u, c - 4.5 * u), fill=_RIM, width=int(1.8 * u))
    else:  # error: an exclamation mark
        draw.rectangle((c - 1.1 * u, c - 5 * u, c + 1.1 * u, c + 1.5 * u), fill=_GLYPH)
        draw.ellipse((c - 1.3 * u, c + 2.7 * u, c + 1.3 * u, c + 5.1 * u), fill=_GLYPH)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def state_of(status) -> str:
    """The icon for an agent status (a ``Status``, or its JSON as a dict; None: the agent is not
    running)."""
    if status is None:
        return "offline"
    state = (status.get("state") if isinstance(status, dict) else status.state) or "idle"
    return {
        "paused": "paused",
        "offline": "offline",
        "error": "error",
        "scanning": "working",
        "analyzing": "working",
        "syncing": "working",
    }.get(state, "idle")
