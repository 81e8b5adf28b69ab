"""Decode an audio file once, streaming, into the blocks every analysis stage is fed from.

Each block carries the audio twice, both produced from the same decoded frames:

* ``analysis``: mono int16 at ``ANALYSIS_RATE`` (11025 Hz), resampled exactly as Chromaprint's
  own ``fpcalc`` does (swresample in Chromaprint's "compatible mode"), so fingerprints are
  bit-identical to ``fpcalc``'s. Tempo, key and the embedding read the same samples.
* ``native``: float32 ``(channels, n)`` at the file's own rate, only when asked for (loudness
  must be measured on the channels as decoded, at their own rate).

Memory is bounded by the block size, never by the file's length (a 2-hour mix streams through).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.error
import av.filter
import numpy as np

from cratesense.errors import (
    AnalysisTimeoutError,
    DecodeError,
    UnreadableFileError,
)

ANALYSIS_RATE = 11025  # Chromaprint's internal rate; every analysis stage works at it.


# Chromaprint's FFmpegAudioProcessor::SetCompatibleMode(): the resampler settings that make our
# fingerprints bit-identical to fpcalc's (plain swresample defaults differ in the last bits).
_COMPAT_RESAMPLE = (
    f"osr={ANALYSIS_RATE}:ochl=mono:osf=s16:resampler=swr:filter_size=16:phase_shift=8"
    ":linear_interp=1:tsf=s16p:cutoff=0.8"
)

# Frames pushed between two pulls, and the size of the frames the resampler hands back.
_FRAMES_PER_PULL = 32
_OUTPUT_FRAME_SAMPLES = 8192

# A few broken packets are normal in real files (a bad frame in an old rip); many are not.
_MIN_TOLERATED_BAD_PACKETS = 10
_TOLERATED_BAD_PACKET_SHARE = 0.02


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the container says about the audio stream, before decoding it."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    channel_names: tuple[str, ...]  # FFmpeg's names: FL, FR, FC, LFE, BL, BR, SL, SR, ...
    declared_duration: float | None  # seconds, as the container declares it (may be estimated)


@dataclass(frozen=True, slots=True)
class AudioBlock:
    analysis: np.ndarray  # int16, mono, ANALYSIS_RATE
    native: np.ndarray | None  # float32 (channels, n) at ``native_rate``
    native_rate: int


def _open_container(path: str | os.PathLike) -> av.container.InputContainer:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise UnreadableFileError(f"file not found: {exc.filename}") from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read file: {exc.strerror}") from exc
    if size == 0:
        raise UnreadableFileError("file is empty (0 bytes)")
    try:
        return av.open(os.fspath(path), mode="r", metadata_errors="replace")
    except PermissionError as exc:
        raise UnreadableFileError(f"cannot read file: {exc.strerror}") from exc
    except av.error.FFmpegError as exc:
        raise DecodeError(f"not a recognizable audio file ({_ffmpeg_reason(exc)})") from exc


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _to_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as float32 ``(channels, n)`` in [-1, 1], whatever its sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    kind = data.dtype.kind
    if kind == "f":
        return data.astype(np.float32, copy=False)
    if kind == "u":  # u8 is offset binary
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))


class _CompatResampler:
    """FFmpeg's aresample filter set up like Chromaprint's; rebuilt if the input format changes
    mid-stream (some MP3 and AAC streams switch sample rate or channel count).

    Frames are pushed one by one but pulled in batches: ``asetnsamples`` makes FFmpeg hand back
    large frames, so Python touches the output a few times a second of audio, not per codec frame.
    """

    def __init__(self) -> None:
        self._graph: av.filter.Graph | None = None
        self._input_key: tuple | None = None
        self._drained: list[np.ndarray] = []

    def push(self, frame: av.AudioFrame) -> None:
        key = (frame.format.name, frame.sample_rate, frame.layout.name)
        if key != self._input_key:
            self._close()
            self._graph = self._build(frame)
            self._input_key = key
        frame.pts = None  # the filter works on sample counts; broken timestamps must not matter
        self._graph.push(frame)

    def pull(self) -> np.ndarray:
        """All resampled audio available so far."""
        pieces = self._drained + self._pull_graph()
        self._drained = []
        return _join(pieces)

    def flush(self) -> np.ndarray:
        """The rest, at the end of the stream."""
        self._close()
        return self.pull()

    @staticmethod
    def _build(frame: av.AudioFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add_abuffer(
            format=frame.format.name,
            sample_rate=frame.sample_rate,
            layout=frame.layout.name,
        )
        resample = graph.add("aresample", _COMPAT_RESAMPLE)
        batch = graph.add("asetnsamples", f"n={_OUTPUT_FRAME_SAMPLES}:p=0")
        sink = graph.add("abuffersink")
        source.link_to(resample)
        resample.link_to(batch)
        batch.link_to(sink)
        graph.configure()
        return graph

    def _pull_graph(self) -> list[np.ndarray]:
        out = []
        while self._graph is not None:
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return out

    def _close(self) -> None:
        if self._graph is not None:
            self._graph.push(None)
            self._drained.extend(self._pull_graph())
            self._graph = None
            self._input_key = None


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    if not pieces:
        return np.empty(0, np.int16)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


class AudioFile:
    """An opened audio file; iterate ``blocks()`` once to decode it.

    Use as a context manager so the container is always closed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._container = _open_container(path)
        try:
            streams = self._container.streams.audio
            if not streams:
                raise DecodeError("the file has no audio stream")
            self._stream = streams[0]
            self.info = self._read_info()
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self._container.close()

    def _read_info(self) -> StreamInfo:
        stream = self._stream
        context = stream.codec_context
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            declared = self._container.duration / av.time_base
        return StreamInfo(
            container=self._container.format.name,
            codec=context.name,
            sample_rate=context.sample_rate or 0,
            channels=context.channels or 0,
            channel_names=tuple(channel.name for channel in context.layout.channels) if context.layout else (),
            declared_duration=declared if declared and declared > 0 else None,
        )

    def _demux(self) -> Iterator[av.Packet]:
        """Packets of the audio stream; a demuxer error ends the stream (what was read counts,
        and the caller's length checks decide whether too little was read)."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:
                return
            yield packet  # the final empty packet flushes frames the decoder still holds
        
    def blocks(
        self,
        *,
        native: bool = False,
        max_seconds: float | None = None,
        deadline: float | None = None,
    ) -> Iterator[AudioBlock]:
        """Decode the audio stream, yielding blocks in order.

        ``max_seconds`` stops after that much analysis audio (the stream is not read further).
        ``deadline`` is a ``time.monotonic()`` value after which decoding raises
        ``AnalysisTimeoutError``.
        """
        limit = None if max_seconds is None else int(max_seconds * ANALYSIS_RATE)
        produced = 0
        for block in self._decoded_blocks(native, deadline):
            if limit is not None and produced + block.analysis.size >= limit:
                yield AudioBlock(block.analysis[: limit - produced], block.native, block.native_rate)
                return  # closing the generator below stops demuxing: the rest is never read
            produced += block.analysis.size
            yield block

    def _decoded_blocks(self, native: bool, deadline: float | None) -> Iterator[AudioBlock]:
        resampler = _CompatResampler()
        packets = bad_packets = 0
        last_error = ""
        native_pieces: list[np.ndarray] = []
        native_rate = self.info.sample_rate
        pushed = 0
        for packet in self._demux():
            if deadline is not None and time.monotonic() > deadline:
                raise AnalysisTimeoutError("decoding took longer than the per-file time limit")
            packets += 1 if packet.size else 0
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                # A damaged packet: skip it like every player does, but not without limit.
                bad_packets += 1
                last_error = _ffmpeg_reason(exc)
                if bad_packets > max(_MIN_TOLERATED_BAD_PACKETS, packets * _TOLERATED_BAD_PACKET_SHARE):
                    raise DecodeError(
                        f"too many damaged audio packets ({bad_packets} of {packets}; last: {last_error})"
                    ) from exc
                continue
            for frame in frames:
                if native:
                    if native_pieces and frame.sample_rate != native_rate:
                        yield AudioBlock(resampler.pull(), _join_native(native_pieces), native_rate)
                        native_pieces = []
                    native_rate = frame.sample_rate
                    native_pieces.append(_to_float(frame))
                resampler.push(frame)
                pushed += 1
            if pushed >= _FRAMES_PER_PULL:
                pushed = 0
                yield AudioBlock(resampler.pull(), _join_native(native_pieces), native_rate)
                native_pieces = []
        if packets and bad_packets == packets:
            raise DecodeError(f"no audio packet could be decoded ({last_error})")
        yield AudioBlock(resampler.flush(), _join_native(native_pieces), native_rate)


def _join_native(pieces: list[np.ndarray]) -> np.ndarray | None:
    if not pieces:
        return None
    if len({piece.shape[0] for piece in pieces}) > 1:  # channel count changed mid-stream
        channels = min(piece.shape[0] for piece in pieces)
        pieces = [piece[:channels] for piece in pieces]
    return np.concatenate(pieces, axis=1)
