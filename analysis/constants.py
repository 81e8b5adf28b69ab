"""What the agent needs to know about the analysis without importing it (numpy, PyAV): the
analyzer's version, its defaults and the file names it reads. The daemon process imports only this; the analysis stack
loads in the worker processes."""

# One version per stage: a change to a stage bumps its number, and the agent re-analyzes only
# tracks whose stage versions differ. The combined string is what observations carry.
# loudness 2: integrated loudness and range from FFmpeg's ebur128 filter (the range of short
# tracks moved by up to 1.3 LU, to what `ffmpeg -af ebur128` says).
# tempo 2, key 2, downbeat 1 (#17): the level a listener taps, the key a piece states, bars.
# embedding 2 (#18): how the track sounds from the channels at their own rate (the mel cepstrum to
# 6 kHz, the stereo width), standardized on real soundtracks: version 1 was barely better than chance.
# tempo 3, key 3, downbeat 2 (#29): the level a DJ counts on dance music (the kick and the hats'
# bands, the backbeat), the key from the notes played (harmonics taken away) and the bass notes,
# with a calibrated strength; bar 1 on the first beat of a drum intro.
# key 4 (#29): played music weighs the key as key 2 did (its opening, ending and bass: chorales and
# cadences read as before), productions also by whether the tonic is the note the bass and the
# notes dwell on most (what tells a riff's tonic from the key a fourth up).
# phrases 1, energy 1, cues 1, waveform 1 (#26): a DJ's prep, from the streamed features (an
# upgrade that adds them decodes the analysis view only and keeps loudness and embedding).
# cutoff 1 (#26): where the spectrum stops (a lossy encoder's edge), to tell transcodes apart.
# model 1 (#27): the sound model's genres, moods and tags; embedding 3: the model's learned embedding;
# tags 2: the file's own genre is read (exports prefer it to the model's).
# model 2 (#27): the model hears 3 patches, not 4; embedding 4: the model's view blended with the
# timbre statistics of embedding 2 (analysis/embedding.py).
STAGE_VERSIONS = {"fingerprint": 1, "tags": 2, "tempo": 3, "key": 4, "loudness": 2, "embedding": 4, "downbeat": 2,
                  "phrases": 1, "energy": 1, "cues": 1, "waveform": 1, "cutoff": 1, "model": 2}
ANALYZER_VERSION = ".".join(f"{stage[0]}{version}" for stage, version in STAGE_VERSIONS.items())
# An analysis the sound model took no part in (it could not be loaded: a damaged or missing file)
# is recorded as version 0 of the model and embedding stages: the track is stale, so the agent
# analyzes it again (keeping its other native stages) until the model can tag it.
MODEL_STAGES = ("model", "embedding")
WITHOUT_MODEL_VERSION = ".".join(f"{stage[0]}{0 if stage in MODEL_STAGES else version}"
                                 for stage, version in STAGE_VERSIONS.items())
# The stages that read the native-rate view, and the descriptor fields each fills: a re-analysis
# keeps the fields of those an upgrade did not change, and computes only the others (when it
# changed none, it decodes only the analysis view). The embedding is made from the sound model's
# output and the timbre statistics, so the two are computed together whenever either is.
NATIVE_STAGE_FIELDS = {
    "loudness": ("loudness_lufs", "loudness_range", "true_peak_dbtp", "replaygain_db"),
    "embedding": ("embedding",),
    "cutoff": ("cutoff_hz",),
    "model": ("genres", "moods", "sound_tags", "tag_strengths"),
}
NATIVE_STAGES = tuple(NATIVE_STAGE_FIELDS)
NATIVE_FIELDS = tuple(field for fields in NATIVE_STAGE_FIELDS.values() for field in fields)
# The stages whose results an observation carries: the wire's analyzer version names only these
# (``wire_version``), so an upgrade of a stage whose fields never leave the machine (bars, phrases,
# cues, the cutoff...) sends nothing again. A stage that puts a field on the wire belongs here.
WIRE_STAGES = ("fingerprint", "tags", "tempo", "key", "loudness", "embedding", "model")

# The longest text a tag, an observation or a consensus may carry (the wire contract checks
# these; an agent reading a catalog's answer never stores more than a contributor could send).
MAX_TEXT_LENGTH = 256
MAX_SHORT_TEXT_LENGTH = 64  # a catalog number

# What `tags write` can write into a file (dj/tagging.py writes them; the config, the CLI and the
# control API take their choice from this one list).
TAG_FIELDS = ("bpm", "key", "replaygain", "serato", "genre", "mood")
# ... and what it writes unless told otherwise: Serato's own tags (cues, beat grid) and the sound
# model's genre and mood only when asked.
DEFAULT_TAG_FIELDS = ("bpm", "key", "replaygain")

# A bar line of the beat grid this close before 0 s is put at 0 s (where the music starts): the
# phrases and the mix-in cue begin there (analysis/phrases.py; the exports accept that one cue).
GRID_SLACK = 0.030

DEFAULT_BPM_RANGE = (70.0, 180.0)  # the tempo range a DJ counts in
# A key whose strength (the key stage's fitted probability) is below this is uncertain: more
# likely wrong than right by the fit. Measured (bench/accuracy.py): on the tuning folds the 15 keys
# below it were right 60 times in 100 (the fit is cautious in its own data; 0.45 would split them
# at 44 in 100, a difference of six pieces), on the held-out folds the 20 below it 35 in 100
# against 70 in 100 above it.
KEY_UNCERTAIN_BELOW = 0.5
BPM_LIMITS = (20.0, 300.0)  # any tempo anywhere (config, flags, the wire contract) lies within these
EMBEDDING_LENGTH = 64  # floats in a track's embedding (the wire contract checks this length)
# The taste profile's histograms on the wire (daemon/profile.py fills them, the catalog's store
# packs them, the contract checks their lengths).
TEMPO_BINS, TEMPO_RANGE = 24, (60.0, 200.0)  # BPM; outside: the end bins
KEY_BINS = 24  # Camelot 1A, 1B, ... 12B
LOUDNESS_BINS, LOUDNESS_RANGE = 12, (-30.0, -3.0)  # LUFS; outside: the end bins

# The words the sound model's tags are shown, written and shared as (analysis/sound_tags.py says
# how each is derived; the catalog's contract accepts no other). Changing them is a new model stage.
GENRE_WORDS = (
    "rock", "metal", "punk", "pop", "indie", "electronic", "techno", "house", "dance", "hip-hop", "soul", "funk",
    "jazz", "blues", "folk", "country", "classical", "opera", "choral", "ambient", "new age", "chillout",
    "easy listening", "experimental", "indian",
)
MOOD_WORDS = ("calm", "energetic", "aggressive", "happy", "sad", "danceable", "sexy", "beautiful", "strange")
OTHER_TAG_WORDS = (
    "vocal", "instrumental", "female vocal", "male vocal", "guitar", "acoustic", "piano", "strings", "drums",
    "synth", "flute", "harp", "harpsichord", "sitar",
)
TAG_WORDS = GENRE_WORDS + MOOD_WORDS + OTHER_TAG_WORDS

# What a music folder's audio files are called; anything else found in a folder is not looked at
# (a file named explicitly is decoded whatever its name says: FFmpeg probes the content).
AUDIO_EXTENSIONS = frozenset(
    ".mp3 .flac .ogg .oga .opus .m4a .mp4 .aac .alac .wav .wave .aif .aiff .aifc .wma .wv .ape".split()
)


def key_uncertain(strength: float | None) -> bool:
    """Whether a key of this strength is a guess the DJ should not mix or tag by without a look
    (a key with no strength, from an older analyzer, is not flagged)."""
    return strength is not None and strength < KEY_UNCERTAIN_BELOW


def stage_versions(analyzer_version: str) -> dict[str, int]:
    """The stage versions an analyzer version names ({} for a string of another form). Stages
    are in ``STAGE_VERSIONS`` order; one added later is absent from older strings."""
    found = {}
    for stage, part in zip(STAGE_VERSIONS, analyzer_version.split(".")):
        if part[:1] != stage[0] or not part[1:].isdigit():
            return {}
        found[stage] = int(part[1:])
    return found


def wire_version(analyzer_version: str) -> str:
    """The analyzer version an observation made by ``analyzer_version`` carries: its
    ``WIRE_STAGES`` only (a string of another form is carried as it is)."""
    versions = stage_versions(analyzer_version)
    if not versions:
        return analyzer_version
    return ".".join(f"{stage[0]}{versions[stage]}" for stage in WIRE_STAGES if stage in versions)


def current_native_stages(analyzer_version: str) -> tuple[str, ...]:
    """The native stages of an analysis by ``analyzer_version`` that are today's."""
    earlier = stage_versions(analyzer_version)
    return tuple(stage for stage in NATIVE_STAGES if earlier.get(stage) == STAGE_VERSIONS[stage])


def native_stages_unchanged(analyzer_version: str) -> bool:
    """Whether an analysis by ``analyzer_version`` has all of today's native stages."""
    return len(current_native_stages(analyzer_version)) == len(NATIVE_STAGES)
