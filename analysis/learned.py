"""The learned sound model: a pre-trained music tagger, run on a few 3-second patches of a track
with ONNX Runtime (one thread), giving tag scores (genres, moods, instruments, voice) and a learned
embedding.

The model ships with CrateSense as package data (``analysis/sound-model/``): musicnn's two taggers
(MagnaTagATune and Million Song Dataset, MTG-UPF 2019, ISC licence), converted once to ONNX by
``scripts/convert_musicnn.py``; ``sound-model/musicnn.json`` records their provenance, labels and
hashes, and ``sound-model/LICENSE-musicnn`` their licence. Each file's SHA-256 is checked when it is
loaded: a missing or altered file is a ``ModelError`` that says which, and the rest of the
analysis goes on without the model.

The model is swappable: the pipeline knows only ``SoundModel`` (the rate it wants, how long a
patch is, ``infer``). ``Musicnn`` is the one implementation.

musicnn's input, reproduced exactly (``musicnn.extractor.batch_data``): mono audio at 16 kHz, a
power spectrogram (periodic Hann, 512-sample FFT, hop 256), 96 mel bands on the Slaney scale
with Slaney (area) normalisation as ``librosa.filters.mel`` makes them, the mel rounded to
float16 (the package stored its training data so), then ``log10(10000 x + 1)`` computed in
float32 (NumPy 1 promoted the product to float32; NumPy 2 would keep float16 and overflow to
infinity above x = 6.55); 187 frames (3 s) a patch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.fft
from scipy import signal

from cratesense.analysis.embedding import MODEL_DIMENSIONS, TIMBRE_DIMENSIONS, TIMBRE_SIZE, blend
from cratesense.errors import ModelError

# 3-second patches per track, each run through one of the two taggers (~30-40 ms of CPU each): 3
# since embedding version 4 brought the timbre statistics back (the CPU budget's share; chosen on
# the development sets, docs/notes-2026-12/issue-27.md).
PATCHES = 3
MODEL_FOLDER = "sound-model"  # package data of cratesense.analysis (no identifier: setuptools takes no package)
MANIFEST = "musicnn.json"


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """A model's view of a track: each label's score (0-1, the mean over the patches) and the mean
    of the patches' penultimate layers (``features``: what ``embed`` makes the embedding of)."""

    scores: dict[str, float]
    features: np.ndarray


class SoundModel(Protocol):
    """What the pipeline needs of a sound model (any implementation will do)."""

    name: str  # recorded with the results
    rate: int  # the sample rate of the mono windows ``infer`` takes
    window_samples: int  # samples per window
    reference: dict[str, tuple[float, ...]]  # its words' raw-score quantiles on a reference library

    def infer(self, windows: np.ndarray) -> ModelOutput:
        """Scores and features of ``(n, window_samples)`` float32 mono windows at ``rate``
        (n >= 1)."""
        ...

    def embed(self, features: np.ndarray, timbre: np.ndarray) -> tuple[float, ...] | None:
        """The track's embedding (``analysis/embedding.py``) from ``infer``'s features and the
        timbre statistics' vector (``embedding.timbre_embedding``)."""
        ...


# --- musicnn's log-mel representation ------------------------------------------------------------

RATE = 16000
N_FFT = 512
HOP = 256
MELS = 96
FRAMES = 187  # a 3-second patch
WINDOW_SAMPLES = (FRAMES - 1) * HOP + N_FFT  # every frame centred on real samples: 48,128


def _hz_to_slaney_mel(hz: float | np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox scale (librosa's default): linear to 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    hz = np.asarray(hz, np.float64)
    linear = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_filterbank(rate: int = RATE, n_fft: int = N_FFT, bands: int = MELS) -> np.ndarray:
    """``librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=bands)``: (bands, n_fft // 2 + 1) float32."""
    frequencies = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(0.0), _hz_to_slaney_mel(rate / 2), bands + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - frequencies[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : bands + 2] - edges[:bands]))[:, None]
    return weights.astype(np.float32)


_FILTERBANK = slaney_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def log_mel_patches(windows: np.ndarray) -> np.ndarray:
    """musicnn's input for ``(n, WINDOW_SAMPLES)`` mono windows at 16 kHz: ``(n, 187, 96)`` float32."""
    windows = np.asarray(windows, np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(windows, N_FFT, axis=1)[:, ::HOP]  # (n, 187, 512)
    spectrum = scipy.fft.rfft(frames * _WINDOW, axis=2)
    power = spectrum.real**2 + spectrum.imag**2
    mel = (power.astype(np.float32) @ _FILTERBANK.T).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * mel + np.float32(1))


# --- choosing the patches while the audio streams by --------------------------------------------

FIRST_SPACING_SECONDS = 4.0  # candidate windows start this far apart, until there are too many
CANDIDATES_PER_PATCH = 4  # candidates kept per patch wanted (the spacing doubles beyond)
QUIET_BELOW_LOUDEST_DB = 20.0  # a candidate this far below the loudest is not where the music is
SILENCE_DBFS = -75.0  # about the pipeline's own silence (an int16 peak of 4): a very quiet track is heard too
# The chosen windows are brought together to this RMS level before the model hears them, so a
# quiet master and a loud one of the same music sound alike to it (musicnn's log-mel is not
# level-invariant; its training clips were mastered pop and rock, about this loud).
LEVEL_DBFS = -14.0
_MARGIN_SECONDS = 0.01  # native samples kept each side of a window for the resampler's filter


class PatchCollector:
    """Keeps a bounded number of candidate windows of a track as it streams by, spread evenly
    over it, and at the end hands the model ``patches`` of them where the music is.

    Feed it the native blocks ``(channels, n)`` float32 at ``rate`` in order. Candidates start
    every ``spacing`` samples (4 s at first); whenever there are more than
    ``CANDIDATES_PER_PATCH * patches`` of them, every other one is dropped and the spacing
    doubles, so a 3-minute song and a 2-hour mix both end with candidates across their whole
    length, and memory never depends on the length (which need not be known in advance).
    ``finish`` drops candidates in silence or far below the loudest (a quiet intro, a fade, a gap
    between movements), takes ``patches`` of the rest evenly spread, mixes them to mono,
    resamples them to the model's rate and brings them together to ``LEVEL_DBFS``.
    """

    def __init__(self, rate: int, model_rate: int, window_samples: int, patches: int) -> None:
        self._rate = rate
        self._model_rate = model_rate
        self._window = window_samples
        self._margin = int(np.ceil(_MARGIN_SECONDS * rate))
        # Native samples a window needs: its length at the model's rate, plus the margins.
        self._length = int(np.ceil(window_samples * rate / model_rate)) + 2 * self._margin
        self._patches = patches
        self._spacing = max(1, int(FIRST_SPACING_SECONDS * rate))
        self._position = 0  # native samples seen so far
        self._windows: dict[int, list[np.ndarray]] = {}  # start -> mono pieces so far
        self._filled: dict[int, int] = {}

    def feed(self, block: np.ndarray) -> None:
        if block is None or block.size == 0:
            return
        start, end = self._position, self._position + block.shape[1]
        first = -(-start // self._spacing) * self._spacing
        for window_start in range(first, end, self._spacing):
            self._windows[window_start] = []
            self._filled[window_start] = 0
        for window_start, pieces in self._windows.items():
            needed = self._length - self._filled[window_start]
            low = max(window_start + self._filled[window_start], start)
            high = min(window_start + self._length, end)
            if needed > 0 and low < high:
                part = block[:, low - start : high - start]
                pieces.append(part.mean(axis=0) if part.shape[0] > 1 else part[0].copy())
                self._filled[window_start] += high - low
        self._position = end
        while len(self._windows) > CANDIDATES_PER_PATCH * self._patches:
            self._spacing *= 2
            for window_start in [s for s in self._windows if s % self._spacing]:
                del self._windows[window_start], self._filled[window_start]

    def finish(self) -> np.ndarray:
        """``(n, window_samples)`` float32 windows at the model's rate, n <= patches (0 for
        silence). A track shorter than one window gives one, repeated to length (as musicnn was
        trained on short clips)."""
        complete = [np.concatenate(pieces) for start, pieces in sorted(self._windows.items())
                    if self._filled[start] == self._length]
        if not complete:
            pieces = self._windows.get(0)
            if not pieces or self._filled[0] < self._margin * 4:
                return np.zeros((0, self._window), np.float32)
            audio = np.concatenate(pieces)
            complete = [np.resize(audio, self._length)]
        levels = np.array([10 * np.log10(np.mean(np.square(w, dtype=np.float64)) + 1e-20) for w in complete])
        audible = np.nonzero((levels > SILENCE_DBFS) & (levels > levels.max() - QUIET_BELOW_LOUDEST_DB))[0]
        if audible.size == 0:
            return np.zeros((0, self._window), np.float32)
        chosen = audible[np.unique(np.round(np.linspace(0, audible.size - 1, min(self._patches, audible.size))).astype(int))]
        windows = np.stack([self._resampled(complete[index]) for index in chosen])
        level = 10 * np.log10(np.mean(np.square(windows, dtype=np.float64)) + 1e-20)
        return (windows * np.float32(10 ** ((LEVEL_DBFS - level) / 20))).astype(np.float32)

    def _resampled(self, window: np.ndarray) -> np.ndarray:
        if self._rate == self._model_rate:
            resampled, margin = window, self._margin
        else:
            common = math.gcd(self._rate, self._model_rate)
            resampled = signal.resample_poly(window, self._model_rate // common, self._rate // common)
            margin = int(round(self._margin * self._model_rate / self._rate))
        return np.ascontiguousarray(resampled[margin : margin + self._window], dtype=np.float32)


# --- loading and running the shipped models --------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_folder() -> Path:
    return Path(str(resources.files("cratesense.analysis").joinpath(MODEL_FOLDER)))


class Musicnn:
    """musicnn's MagnaTagATune and Million Song Dataset taggers, side by side: 100 labels (each
    prefixed ``mtt:`` or ``msd:``) and a 400-d embedding (the two 200-unit penultimate layers,
    each averaged over the windows its tagger saw)."""

    rate = RATE
    window_samples = WINDOW_SAMPLES

    def __init__(self, folder: Path | None = None) -> None:
        folder = Path(folder) if folder is not None else model_folder()
        manifest_path = folder / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
            models = manifest["models"]
        except FileNotFoundError as exc:
            raise ModelError(f"the sound model's manifest is missing ({manifest_path})") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"the sound model's manifest cannot be read ({manifest_path}: {exc})") from exc
        self.name = f"{manifest.get('package', 'musicnn')}"
        self.labels: tuple[str, ...] = ()
        self._sessions = []
        import onnxruntime  # here, not at import: only a worker that runs the model pays for it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # No memory arena: it kept the largest run's feature maps (24 MB a worker) for no speed.
        options.enable_cpu_mem_arena = False
        for short in ("mtt", "msd"):
            path = _checked(folder, models, short, "scripts/convert_musicnn.py")
            entry = models[short]
            try:
                session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"the sound model file {path.name} cannot be loaded: {exc}") from exc
            self._sessions.append(session)
            self.labels += tuple(f"{short}:{label}" for label in entry["labels"])
        self.projection = _load_projection(folder, manifest)
        self.reference = _load_reference(folder, manifest)

    def infer(self, windows: np.ndarray) -> ModelOutput:
        """The two taggers take turns: the first window goes to MTT's, the second to MSD's, and
        so on (a lone window goes to both). Spreading a fixed number of inferences over more
        places in the track describes it better than running both taggers on fewer places
        (bench/similar.py: precision@5 0.455 vs 0.370 on the development soundtracks for four
        inferences)."""
        patches = log_mel_patches(windows)
        scores, embeddings = [], []
        for index, session in enumerate(self._sessions):
            mine = patches[index :: len(self._sessions)] if len(patches) > 1 else patches
            # One patch a run: the feature maps of one patch are ~10 MB each, and ONNX Runtime's
            # arena keeps the largest run's; batches made the worker ~100 MB larger for no speed.
            outputs = [session.run(["tags", "penultimate"], {"mel": patch[None]}) for patch in mine]
            scores.append(np.mean([tags[0] for tags, _ in outputs], axis=0))
            embeddings.append(np.mean([penultimate[0] for _, penultimate in outputs], axis=0))
        joined = np.concatenate(scores)
        features = np.concatenate(embeddings).astype(np.float32)
        return ModelOutput(scores={label: float(score) for label, score in zip(self.labels, joined)}, features=features)

    def embed(self, features: np.ndarray, timbre: np.ndarray) -> tuple[float, ...] | None:
        return self.projection.embed(features, timbre)


@dataclass(frozen=True)
class Projection:
    """From the model's penultimate layers and the timbre statistics to the track's embedding
    (``analysis/embedding.py``): the layers centred on the mean of a corpus of real music,
    projected on its ``MODEL_DIMENSIONS`` principal directions, each scaled by ``scale``; the
    statistics' unit vector projected on its ``TIMBRE_DIMENSIONS`` principal directions over the
    same corpus; the two blended (fitted by ``bench/similar.py --fit``; stored beside the model)."""

    mean: np.ndarray
    components: np.ndarray  # (MODEL_DIMENSIONS, features)
    scale: np.ndarray
    timbre_components: np.ndarray  # (TIMBRE_DIMENSIONS, TIMBRE_SIZE)

    def model_part(self, features: np.ndarray) -> np.ndarray:
        return (self.components @ (np.asarray(features, np.float64) - self.mean)) / self.scale

    def embed(self, features: np.ndarray, timbre: np.ndarray) -> tuple[float, ...] | None:
        return blend(self.model_part(features), self.timbre_components @ np.asarray(timbre, np.float64))


def _checked(folder: Path, manifest: dict, key: str, made_by: str) -> Path:
    """The file the manifest's ``key`` entry names, its checksum checked."""
    entry = manifest.get(key)
    if not entry:
        raise ModelError(f"the sound model's manifest names no {key} file ({made_by})")
    path = folder / entry["file"]
    if not path.is_file():
        raise ModelError(f"the sound model file {path.name} is missing (reinstall CrateSense)")
    if _sha256(path) != entry["sha256"]:
        raise ModelError(f"the sound model file {path.name} is damaged: its checksum does not match "
                         "(reinstall CrateSense)")
    return path


def _load_reference(folder: Path, manifest: dict) -> dict[str, tuple[float, ...]]:
    path = _checked(folder, manifest, "calibration", "bench/tags.py --fit")
    try:
        return {word: tuple(float(v) for v in values) for word, values in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ModelError(f"the sound model file {path.name} cannot be read: {exc}") from exc


def _load_projection(folder: Path, manifest: dict) -> Projection:
    path = _checked(folder, manifest, "embedding", "bench/similar.py --fit")
    try:
        with np.load(path, allow_pickle=False) as stored:
            projection = Projection(*(stored[name].astype(np.float64)
                                      for name in ("mean", "components", "scale", "timbre_components")))
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"the sound model file {path.name} cannot be read: {exc}") from exc
    shapes = (projection.components.shape, projection.scale.shape, projection.timbre_components.shape)
    if shapes != ((MODEL_DIMENSIONS, projection.mean.size), (MODEL_DIMENSIONS,), (TIMBRE_DIMENSIONS, TIMBRE_SIZE)):
        raise ModelError(f"the sound model file {path.name} has the wrong shapes {shapes}")
    return projection


def load_model(folder: Path | None = None) -> SoundModel:
    """The shipped model (or the one in ``folder``), checked; raises ``ModelError``."""
    return Musicnn(folder)


@functools.cache
def shipped_model() -> SoundModel | ModelError:
    """The model this process uses, loaded once (a worker keeps it for every file): the shipped
    one, or the folder ``CRATESENSE_SOUND_MODEL`` names (laid out like ``sound-model/``). When it
    cannot be loaded, the ``ModelError`` saying why, so every analysis can report it."""
    folder = os.environ.get("CRATESENSE_SOUND_MODEL")
    try:
        return load_model(Path(folder) if folder else None)
    except ModelError as exc:
        return exc
    except Exception as exc:  # an unreadable file, a manifest missing a key, onnxruntime failing to import...
        return ModelError(f"the sound model could not be loaded: {type(exc).__name__}: {exc}")
