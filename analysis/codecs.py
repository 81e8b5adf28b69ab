"""Codecs as people know them, named once for every face (the CLI, the page, JSON answers, error
messages): FFmpeg reports its decoder's name (``mp3float``, ``aac_fixed``, ``pcm_s24le``), a DJ
knows "MP3", "AAC", "WAV". Also which codecs are lossless, and which lossy ones make up their top
octave instead of coding it (so where their spectrum stops says nothing of their source)."""

from __future__ import annotations

# FFmpeg decoder (or codec) name -> the name people use
_NAMES = {
    "mp3": "MP3", "mp3float": "MP3", "mp3adu": "MP3", "mp3adufloat": "MP3", "mp3on4": "MP3", "mp3on4float": "MP3",
    "mp2": "MP2", "mp2float": "MP2", "mp1": "MP1", "mp1float": "MP1",
    "aac": "AAC", "aac_fixed": "AAC", "aac_latm": "AAC", "libfdk_aac": "AAC", "aac_at": "AAC",
    "alac": "ALAC", "flac": "FLAC", "vorbis": "Vorbis", "libvorbis": "Vorbis", "opus": "Opus", "libopus": "Opus",
    "wmav1": "WMA", "wmav2": "WMA", "wmapro": "WMA Pro", "wmavoice": "WMA Voice", "wmalossless": "WMA Lossless",
    "ape": "Monkey's Audio", "wavpack": "WavPack", "tta": "TTA", "tak": "TAK", "shorten": "Shorten",
    "dsd_lsbf": "DSD", "dsd_msbf": "DSD", "dsd_lsbf_planar": "DSD", "dsd_msbf_planar": "DSD",
    "ac3": "AC-3", "ac3_fixed": "AC-3", "eac3": "E-AC-3", "dca": "DTS", "truehd": "Dolby TrueHD", "mlp": "MLP",
    "amrnb": "AMR", "amrwb": "AMR-WB", "speex": "Speex", "musepack7": "Musepack", "musepack8": "Musepack",
}
# PCM in a container that says so; FFmpeg's little-endian PCM is WAV's, big-endian AIFF's
_PCM_BIG_ENDIAN = "AIFF"
_PCM_LITTLE_ENDIAN = "WAV"

LOSSLESS = frozenset({"flac", "alac", "wavpack", "ape", "tak", "tta", "mlp", "truehd", "wmalossless", "shorten"})
# Opus (CELT's band folding) and spectral band replication fill the top octave with made-up
# content: an Opus file made from a 16 kHz MP3 reaches 20 kHz (measured on real transcodes).
FILLS_THE_TOP = frozenset({"opus", "libopus"})


def codec_name(codec: str | None) -> str | None:
    """"MP3", "AAC", "FLAC", "Vorbis", "Opus", "ALAC", "WAV", "AIFF", ...; an unknown codec in
    capitals; None for None."""
    if not codec:
        return None
    if codec.startswith("pcm_"):  # pcm_s16le, pcm_s24be, pcm_f32le...
        return _PCM_BIG_ENDIAN if codec.endswith("be") else _PCM_LITTLE_ENDIAN
    return _NAMES.get(codec, codec.upper())


def is_lossless(codec: str | None) -> bool:
    return codec is not None and (codec in LOSSLESS or codec.startswith("pcm_"))
