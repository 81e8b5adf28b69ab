"""Convert musicnn's two taggers (MagnaTagATune and Million Song Dataset) to ONNX, once: a
developer step, never run by the agent or the tests. TensorFlow and tf2onnx live only in a
throwaway virtualenv outside the repository, which this script makes and re-runs itself in:

    python3 scripts/convert_musicnn.py [--venv /tmp/musicnn-convert] [--audio FILE ...]

It writes ``analysis/sound-model/musicnn-{mtt,msd}.onnx``, ``analysis/sound-model/musicnn.json`` (labels,
provenance, hashes, reference outputs) and ``analysis/sound-model/LICENSE-musicnn`` (the package's
own licence text), after checking on real audio that ONNX Runtime's outputs equal TensorFlow's.

What it does, model by model: rebuilds musicnn's graph (``musicnn.models.define_model``, the
package's own code) in inference mode (batch normalisation with its moving statistics, no
dropout) on an input of ``[batch, 187, 96]`` log-mel frames, restores the package's checkpoint,
freezes it, and converts it with tf2onnx. Outputs: ``tags`` (the 50 sigmoid scores),
``penultimate`` (the 200-unit dense layer musicnn calls "penultimate"), ``mean_pool`` and
``max_pool`` (the 753-d temporal poolings in front of it).

Checks: the log-mel patches of ``--audio`` files (default: the test suite's cached Debian
recordings) are computed exactly as ``musicnn.extractor.batch_data`` does (librosa at 16 kHz,
the mel rounded to float16, ``log10(10000 x + 1)``); TensorFlow and ONNX Runtime run on the same
patches and every output must agree within 1e-5. A synthetic reference signal (a formula any
NumPy reproduces) and the TensorFlow outputs for it go into ``musicnn.json``, so the test suite
checks our own mel + ONNX Runtime against TensorFlow without TensorFlow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "analysis" / "sound-model"
# The toolchain, pinned so that a re-run gives the same files (musicnn's own pins cannot install
# on Python 3.11: it is installed without its dependencies, which the rest of this list provides).
TOOLCHAIN = [
    "tensorflow-cpu==2.15.1",
    "tf2onnx==1.16.1",
    "onnx==1.17.0",
    "onnxruntime==1.26.0",
    "numpy==1.26.4",
    "librosa==0.10.2",
    "protobuf==3.20.3",
    "soundfile==0.14.0",
]
MUSICNN = "musicnn==0.1.0"
OPSET = 13
FRAMES = 187  # musicnn's patch: librosa.time_to_frames(3 s, sr=16000, n_fft=512, hop_length=256) + 1
MELS = 96
REFERENCE_RATE = 16000
TOLERANCE = 1e-5
MODEL_NAMES = {"mtt": "MTT_musicnn", "msd": "MSD_musicnn"}
TRAINING_DATA = {
    "mtt": "MagnaTagATune (Law et al., 2009): clips from Magnatune, licensed by Magnatune under "
    "Creative Commons BY-NC-SA 1.0; the dataset's annotations from the TagATune game",
    "msd": "Million Song Dataset (Bertin-Mahieux et al., 2011) with its Last.fm tags: features and "
    "metadata for research; the audio previews musicnn was trained on came from 7digital and are "
    "not freely licensed",
}


def in_toolchain() -> bool:
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
        import musicnn  # noqa: F401
    except ImportError:
        return False
    return True


def make_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TOOLCHAIN], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", MUSICNN], check=True)
    return python


def reference_signal():
    """A 4-second test signal at 16 kHz that any NumPy reproduces exactly (tests/test_learned.py
    builds the same one): a decaying A-minor arpeggio over a kick pulse and a little noise."""
    import numpy as np

    rate = REFERENCE_RATE
    t = np.arange(4 * rate) / rate
    signal = np.zeros_like(t)
    for index, frequency in enumerate((220.0, 261.63, 329.63, 440.0)):
        onset = index * 0.25
        envelope = np.where(t >= onset, np.exp(-3.0 * ((t - onset) % 1.0)), 0.0)
        signal += 0.2 * envelope * np.sin(2 * np.pi * frequency * t)
    beat = t % 0.5
    signal += 0.5 * np.exp(-30 * beat) * np.sin(2 * np.pi * (50 + 100 * np.exp(-20 * beat)) * beat)
    signal += 0.01 * np.random.default_rng(27).standard_normal(t.size)
    return signal.astype(np.float32)


REFERENCE_OFFSET = 16  # the reference patch starts at frame 16: no frame of it touches the padding


def log_mel(audio, rate: int):
    """musicnn's representation of a mono signal at 16 kHz: ``extractor.batch_data`` less the file
    loading (librosa mel power spectrogram, float16, log10(10000 x + 1)), frames first."""
    import librosa
    import numpy as np

    mel = librosa.feature.melspectrogram(y=audio, sr=rate, hop_length=256, n_fft=512, n_mels=MELS).T
    return np.log10(10000 * mel.astype(np.float16) + 1)  # numpy 1.26: the product is float32


def patches(representation):
    import numpy as np

    starts = range(0, representation.shape[0] - FRAMES + 1, FRAMES)
    return np.stack([representation[start : start + FRAMES] for start in starts]).astype(np.float32)


def frozen_graph(model: str):
    """musicnn's graph in inference mode with its checkpoint's weights, frozen."""
    import musicnn
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        # Any number of frames: musicnn's temporal convolutions and poolings take any length
        # ("musicnn models allow for different input lengths", its documentation); 187 is 3 s.
        mel = tf.compat.v1.placeholder(tf.float32, [None, None, MELS], name="mel")
        logits, _timbral, _temporal, _c1, _c2, _c3, mean_pool, max_pool, penultimate = models.define_model(
            mel, False, model, 50
        )
        tf.identity(tf.nn.sigmoid(logits), name="tags")
        tf.identity(penultimate, name="penultimate")
        tf.identity(mean_pool, name="mean_pool")
        tf.identity(max_pool, name="max_pool")
        session = tf.compat.v1.Session(graph=graph)
        tf.compat.v1.train.Saver().restore(session, str(Path(musicnn.__file__).parent / model) + "/")
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), ["tags", "penultimate", "mean_pool", "max_pool"]
        )
    return frozen, session


OUTPUTS = ("tags", "penultimate", "mean_pool", "max_pool")


CHUNK = 16  # patches per run: a few hundred at once take gigabytes of feature maps


def run_tensorflow(session, batch):
    import numpy as np

    graph = session.graph
    fetches = [graph.get_tensor_by_name(f"{name}:0") for name in OUTPUTS]
    chunks = [session.run(fetches, {graph.get_tensor_by_name("mel:0"): batch[start : start + CHUNK]})
              for start in range(0, len(batch), CHUNK)]
    return {name: np.concatenate([chunk[index] for chunk in chunks]) for index, name in enumerate(OUTPUTS)}


def run_onnx(path: Path, batch):
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    chunks = [session.run(list(OUTPUTS), {"mel": batch[start : start + CHUNK]}) for start in range(0, len(batch), CHUNK)]
    return {name: np.concatenate([chunk[index] for chunk in chunks]) for index, name in enumerate(OUTPUTS)}


def plain_names(proto):
    """The graph's input and outputs named without TensorFlow's ``:0``."""
    renames = {f"{name}:0": name for name in ("mel", *OUTPUTS)}
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    proto.producer_name = "scripts/convert_musicnn.py (tf2onnx)"
    return proto


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_audio() -> list[Path]:
    cache = Path(os.environ.get("CRATESENSE_TEST_AUDIO_CACHE", Path.home() / ".cache" / "cratesense-test-audio"))
    return sorted(cache.rglob("*.ogg"))[:4]


def convert(audio_files: list[Path], output: Path) -> None:
    import librosa
    import musicnn
    import numpy as np
    import tf2onnx
    from importlib.metadata import version
    from musicnn import configuration

    output.mkdir(parents=True, exist_ok=True)
    real = []
    for path in audio_files:
        audio, _ = librosa.load(str(path), sr=REFERENCE_RATE)
        real.append(patches(log_mel(audio, REFERENCE_RATE)))
        print(f"  {path.name}: {real[-1].shape[0]} patches")
    if not real:
        raise SystemExit("no audio to check the conversion on (--audio FILE ...)")
    real_batch = np.concatenate(real)
    reference = log_mel(reference_signal(), REFERENCE_RATE)[REFERENCE_OFFSET : REFERENCE_OFFSET + FRAMES][None]

    manifest = {
        "name": "musicnn",
        "package": MUSICNN,
        "package_licence": "ISC (the package's only licence file, copied as LICENSE-musicnn)",
        "source": "the PyPI package's checkpoints musicnn/MTT_musicnn and musicnn/MSD_musicnn "
        "(Pons & Serra, 'musicnn: pre-trained convolutional neural networks for music audio "
        "tagging', ISMIR 2019 late-breaking demo; Music Technology Group, Universitat Pompeu Fabra)",
        "converted_with": {name: version(name) for name in ("tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime")},
        "conversion": "scripts/convert_musicnn.py",
        "opset": OPSET,
        "input": {"name": "mel", "shape": ["batch", "frames", MELS], "trained_frames": FRAMES, "rate": REFERENCE_RATE, "n_fft": 512,
                  "hop": 256, "mels": MELS, "mel_scale": "slaney", "mel_norm": "slaney",
                  "compression": "log10(10000 * float16(mel power) + 1)"},
        "reference_signal": {"offset_frames": REFERENCE_OFFSET,
                             "about": "scripts/convert_musicnn.py reference_signal(), 4 s at 16 kHz"},
        "models": {},
    }
    for short, model in MODEL_NAMES.items():
        print(f"{model}:")
        frozen, session = frozen_graph(model)
        target = output / f"musicnn-{short}.onnx"
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen, input_names=["mel:0"], output_names=[f"{name}:0" for name in OUTPUTS], opset=OPSET
        )
        target.write_bytes(plain_names(proto).SerializeToString())
        # 3-second patches as trained, and 1.5-second ones (half a patch: any length works).
        worst = {}
        for batch in (real_batch, real_batch[:, : FRAMES // 2]):
            expected = run_tensorflow(session, batch)
            got = run_onnx(target, batch)
            # Relative to each output's scale: the poolings run into the hundreds, float32 keeps ~7 digits.
            for name in OUTPUTS:
                difference = float(np.max(np.abs(expected[name] - got[name])) / max(1.0, np.max(np.abs(expected[name]))))
                worst[name] = max(worst.get(name, 0.0), difference)
        print(f"  ONNX vs TensorFlow on {real_batch.shape[0]} real patches of {FRAMES} and of {FRAMES // 2} frames, "
              f"largest difference relative to max(1, the output's largest value): {worst}")
        if max(worst.values()) > TOLERANCE:
            raise SystemExit(f"{model}: ONNX Runtime differs from TensorFlow by more than {TOLERANCE}")
        checkpoint = Path(musicnn.__file__).parent / model
        reference_out = run_tensorflow(session, reference)
        manifest["models"][short] = {
            "file": target.name,
            "sha256": sha256(target),
            "bytes": target.stat().st_size,
            "checkpoint": {p.name: sha256(p) for p in sorted(checkpoint.iterdir()) if p.name.startswith(".")},
            "training_data": TRAINING_DATA[short],
            "labels": list(configuration.MTT_LABELS if short == "mtt" else configuration.MSD_LABELS),
            "checked": {"patches": int(real_batch.shape[0]), "max_relative_difference": worst},
            "reference_tags": [round(float(v), 6) for v in reference_out["tags"][0]],
            "reference_penultimate": [round(float(v), 5) for v in reference_out["penultimate"][0]],
        }
        session.close()
    licence = Path(musicnn.__file__).parent.parent / "musicnn-0.1.0.dist-info" / "LICENSE.md"
    (output / "LICENSE-musicnn").write_text(licence.read_text())
    (output / "musicnn.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {', '.join(sorted(p.name for p in output.iterdir()))} in {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/musicnn-convert"),
                        help="the throwaway virtualenv for TensorFlow and tf2onnx (outside the repository)")
    parser.add_argument("--audio", type=Path, nargs="*", help="real recordings to check the conversion on")
    parser.add_argument("--output", type=Path, default=MODELS, help="where to write the files (default: %(default)s)")
    arguments = parser.parse_args()
    if not in_toolchain():
        python = make_venv(arguments.venv)
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    audio = arguments.audio or default_audio()
    convert(audio, arguments.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
