"""Decode an audio file once, streaming, into the blocks every analysis stage is fed from.

Each block carries the audio twice, both produced from the same decoded frames:

* ``analysis``: mono int16 at ``ANALYSIS_RATE`` (11025 Hz), resampled exactly as Chromaprint's
  own ``fpcalc`` does (swresample in Chromaprint's "compatible mode"), so fingerprints are
  bit-identical to ``fpcalc``'s. Tempo, key and the embedding read the same samples.
* ``native``: float32 ``(channels, n)`` at the file's own rate (that of its first frame), only
  when asked for (loudness must be measured on the channels as decoded, at their own rate).

FFmpeg's filter graph does the conversion, resampling and batching into blocks of a second or so:
Python handles each decoded frame only to push it on, and sees a few hundred blocks per track.

Memory is bounded by the block size, never by the file's length (a 2-hour mix streams through).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

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

# Decoded frames pushed between two pulls, and the size of the blocks the filter graph hands back
# (about 1.5 s of audio each: a 4-minute track is ~160 blocks per view).
_FRAMES_PER_PULL = 64
_ANALYSIS_BLOCK_SAMPLES = 16384
_NATIVE_BLOCK_SAMPLES = 65536

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
    bitrate: int | None = None  # bits per second of the audio stream, when its header states it


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


class _FilterGraph:
    """One FFmpeg filter graph doing all per-sample work in C: format conversion, resampling and
    batching into large blocks, for the analysis view and (optionally) the native view.

        abuffer ─┬─ aresample (Chromaprint's compatible mode) ─ asetnsamples ─ sink: analysis
                 └─ aformat (fltp at the stream's first rate and layout) ─ asetnsamples ─ sink: native

    Python pushes decoded frames and pulls a block every second or so. The native view keeps the
    rate and layout of the stream's first frame, so a stream that switches mid-way (some MP3 and
    AAC streams do) is resampled to it and the loudness meter sees one continuous signal.
    """

    def __init__(self, frame: av.AudioFrame, native: tuple[int, str] | None) -> None:
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(
            format=frame.format.name, sample_rate=frame.sample_rate, layout=frame.layout.name
        )
        branches = [("aresample", _COMPAT_RESAMPLE, _ANALYSIS_BLOCK_SAMPLES)]
        if native is not None:
            rate, layout = native
            branches.append(
                ("aformat", f"sample_fmts=fltp:sample_rates={rate}:channel_layouts={layout}", _NATIVE_BLOCK_SAMPLES)
            )
        if len(branches) > 1:
            split = self._graph.add("asplit", str(len(branches)))
            source.link_to(split)
        self._sinks = []
        for output, (name, args, block) in enumerate(branches):
            convert = self._graph.add(name, args)
            if len(branches) > 1:
                split.link_to(convert, output, 0)
            else:
                source.link_to(convert)
            batch = self._graph.add("asetnsamples", f"n={block}:p=0")
            sink = self._graph.add("abuffersink")
            convert.link_to(batch)
            batch.link_to(sink)
            self._sinks.append(sink)
        self._graph.configure()

    def push(self, frame: av.AudioFrame | None) -> None:
        """The next decoded frame; None at the end of the stream (the rest is flushed out)."""
        self._graph.push(frame)

    def pull(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The blocks ready so far: analysis int16 ``(n,)`` and native float32 ``(channels, n)``."""
        views: list[list[np.ndarray]] = [[], []]
        for pieces, sink in zip(views, self._sinks):
            while True:
                try:
                    frame = cast(av.AudioFrame, sink.pull())  # an audio graph's sinks give audio frames
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                pieces.append(frame.to_ndarray())
        analysis, native = views
        return [piece.reshape(-1) for piece in analysis], native


class _Converter:
    """The filter graph over a whole stream: rebuilt (after flushing the old one) when the decoded
    frames change format, rate or layout, which a filter graph cannot follow by itself."""

    def __init__(self, native: bool) -> None:
        self._native = native
        self._native_format: tuple[int, str] | None = None
        self._graph: _FilterGraph | None = None
        self._input_key: tuple | None = None
        self._analysis: list[np.ndarray] = []
        self._native_blocks: list[np.ndarray] = []

    @property
    def native_rate(self) -> int | None:
        return self._native_format[0] if self._native_format else None

    def push(self, frame: av.AudioFrame) -> None:
        key = (frame.format.name, frame.sample_rate, frame.layout.name)
        if key != self._input_key:
            self._close()
            if self._native and self._native_format is None:
                self._native_format = (frame.sample_rate, frame.layout.name)
            self._graph = _FilterGraph(frame, self._native_format)
            self._input_key = key
        frame.pts = None  # the filters work on sample counts; broken timestamps must not matter
        assert self._graph is not None, "made above for the first frame"
        self._graph.push(frame)

    def take(self, final: bool = False) -> AudioBlock:
        """Everything converted so far (at the end, ``final`` flushes the graph)."""
        if final:
            self._close()
        elif self._graph is not None:
            self._collect()
        block = AudioBlock(_join(self._analysis), _join_native(self._native_blocks), self.native_rate or 0)
        self._analysis, self._native_blocks = [], []
        return block

    def _collect(self) -> None:
        assert self._graph is not None, "collected only while a graph runs"
        analysis, native = self._graph.pull()
        self._analysis.extend(analysis)
        self._native_blocks.extend(native)

    def _close(self) -> None:
        if self._graph is not None:
            self._graph.push(None)
            self._collect()
            self._graph = None
            self._input_key = None


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    if not pieces:
        return np.empty(0, np.int16)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _join_native(pieces: list[np.ndarray]) -> np.ndarray | None:
    if not pieces:
        return None
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)


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
            bitrate=stream.bit_rate or None,
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
        """Decode the audio stream, yielding blocks in order (a block's views may be empty).

        ``max_seconds`` stops after that much analysis audio: the stream is not demuxed, decoded
        or converted further. ``deadline`` is a ``time.monotonic()`` value after which decoding
        raises ``AnalysisTimeoutError``.
        """
        limit = None if max_seconds is None else int(max_seconds * ANALYSIS_RATE)
        produced = 0
        for block in self._decoded_blocks(native, max_seconds, deadline):
            if limit is not None and produced + block.analysis.size >= limit:
                yield AudioBlock(block.analysis[: limit - produced], block.native, block.native_rate)
                return
            produced += block.analysis.size
            yield block

    def _decoded_blocks(self, native: bool, max_seconds: float | None, deadline: float | None) -> Iterator[AudioBlock]:
        converter = _Converter(native)
        packets = bad_packets = 0
        last_error = ""
        pushed = 0
        decoded_seconds = 0.0
        # The resampler holds back a few ms; stop feeding it a little after the span asked for.
        enough = None if max_seconds is None else max_seconds + 1.0
        for packet in self._demux():
            if deadline is not None and time.monotonic() > deadline:
                raise AnalysisTimeoutError("decoding took longer than the per-file time limit")
            packets += 1 if packet.size else 0
            try:
                frames = cast(list[av.AudioFrame], packet.decode())  # packets of the audio stream only
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
                converter.push(frame)
                pushed += 1
                if enough is not None:
                    decoded_seconds += frame.samples / frame.sample_rate
            if enough is not None and decoded_seconds >= enough:
                break  # the rest of the file is never demuxed
            if pushed >= _FRAMES_PER_PULL:
                pushed = 0
                yield converter.take()
        if packets and bad_packets == packets:
            raise DecodeError(f"no audio packet could be decoded ({last_error})")
        yield converter.take(final=True)
