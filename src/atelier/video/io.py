"""Reading and writing video with PyAV (FFmpeg's libraries, from its wheel): probe, decode, lossless chunks, the
final encode with the input's audio.

- ``probe(path)`` reads the container and demuxes the video packets (no decoding) to count frames and decide whether
  the frame rate is variable. A file FFmpeg cannot read, one without a video stream, or one without frames is an
  ``AtelierError`` with one line.
- ``frames(path)`` decodes RGB frames one at a time (memory stays one frame).
- ``ChunkWriter`` writes the stylised frames of one chunk losslessly (FFV1 in Matroska) under a temporary name and
  renames it when the chunk is whole; the chunk's presentation times go in a JSON beside it, written last, so a
  chunk with its JSON is finished and one without is redone.
- ``assemble(chunks, info, out)`` encodes the chunks into the output's format at the input's size, with the input's
  timestamps (so a variable frame rate is kept where the container can carry it) and the input's audio (copied where
  the container takes its codec, else re-encoded), to a temporary name renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..errors import AtelierError
from ..files import atomic_path, check_writable_parent

# Output extension -> (FFmpeg muxer, video encoders in order of preference, audio codecs it can take as they are,
# the audio encoder used otherwise, whether it can keep a variable frame rate).
FORMATS: dict[str, tuple[str, tuple[str, ...], frozenset, str, bool]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4"), frozenset({"aac", "mp3", "alac", "ac3", "eac3"}), "aac", True),
    ".m4v": ("mp4", ("libx264", "mpeg4"), frozenset({"aac", "mp3", "alac", "ac3", "eac3"}), "aac", True),
    ".mov": ("mov", ("libx264", "mpeg4"), frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le"}), "aac", True),
    ".mkv": ("matroska", ("libx264", "ffv1"), frozenset(), "", True),  # Matroska takes any audio codec
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), frozenset({"opus", "vorbis"}), "libopus", True),
    ".avi": ("avi", ("mpeg4",), frozenset({"mp3", "mp2", "ac3", "pcm_s16le"}), "mp2", False),
}
# x264/VP9 quality: visually lossless-ish; the picture is a painting, its strokes deserve the bits.
ENCODER_OPTIONS = {"libx264": {"crf": "18", "preset": "fast"}, "libvpx-vp9": {"crf": "24", "b": "0"},
                   "libvpx": {"crf": "10", "b": "2M"}, "mpeg4": {"qscale": "3"}}
CHUNK_CODEC = "ffv1"  # lossless: a resumed job reads its last stylised frame back exactly


def _av():
    try:
        import av
    except ImportError:
        raise AtelierError("video needs PyAV and OpenCV: pip install 'atelier[video]'") from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own log lines would break our one-line errors
    return av


def disk_full(e: BaseException, where: str) -> Optional[AtelierError]:
    """The one-line error for a full disk while writing ``where`` (None: ``e`` is another error)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return AtelierError(f"the disk filled up while writing {where}; nothing half-written was kept under that "
                            "name and the finished chunks are: free some space and run the same command again")
    return None


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    frames: int              # video packets demuxed (one frame each for the codecs we read)
    rate: Fraction           # the average frame rate
    time_base: Fraction      # the video stream's
    variable_rate: bool      # frame intervals differ by more than 2% (and more than one tick)
    min_interval: float      # seconds between frames, smallest and largest
    max_interval: float
    audio: Optional[str]     # the first audio stream's codec, or None
    container: str
    start: int = 0           # the first frame's presentation time (stream time base): the output's time zero

    @property
    def origin(self) -> float:
        return float(self.start * self.time_base)

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"], d["time_base"] = float(self.rate), str(self.time_base)
        return d


def _open_input(path: Path):
    av = _av()
    if not path.exists():
        raise AtelierError(f"{path} does not exist")
    if path.is_dir():
        raise AtelierError(f"{path} is a folder; give a video file")
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as e:
        raise AtelierError(f"{path} is not a video FFmpeg can read ({getattr(e, 'strerror', None) or e})") from None


def probe(path: os.PathLike | str) -> VideoInfo:
    """What ``path`` holds, reading its packets but decoding nothing."""
    av = _av()
    path = Path(path)
    with _open_input(path) as c:
        videos = [s for s in c.streams if s.type == "video"]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "none"
            raise AtelierError(f"{path} has no video stream (its streams: {kinds})")
        v = videos[0]
        audios = [s for s in c.streams if s.type == "audio"]
        pts, count = [], 0
        try:
            for packet in c.demux(v):
                if packet.size == 0:  # the flush packet demux yields at the end
                    continue
                count += 1
                if packet.pts is not None:
                    pts.append(packet.pts)
        except av.FFmpegError as e:
            raise AtelierError(f"{path}: its video stream cannot be read ({getattr(e, 'strerror', None) or e})") \
                from None
        if count == 0:
            raise AtelierError(f"{path} has a video stream with no frames")
        tb = Fraction(v.time_base) if v.time_base else Fraction(1, 90000)
        rate = Fraction(v.average_rate) if v.average_rate else (Fraction(v.guessed_rate) if v.guessed_rate else None)
        steps = np.diff(np.unique(np.asarray(pts, dtype=np.int64)))
        if rate is None or rate <= 0:
            if not len(steps):
                raise AtelierError(f"{path}: the frame rate cannot be read")
            rate = Fraction(1) / (tb * int(np.median(steps)))
        lo = float(steps.min() * tb) if len(steps) else float(1 / rate)
        hi = float(steps.max() * tb) if len(steps) else float(1 / rate)
        variable = bool(len(steps) >= 2 and steps.max() - steps.min() > max(1, 0.02 * np.median(steps)))
        width, height = v.codec_context.width, v.codec_context.height
        if not width or not height:
            raise AtelierError(f"{path}: the video stream has no frame size")
        return VideoInfo(str(path), width, height, count, rate, tb, variable, lo, hi,
                         audios[0].codec_context.name if audios else None, c.format.name,
                         int(min(pts)) if pts else 0)


def frames(path: os.PathLike | str, info: VideoInfo) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(pts, frame)``: each frame as RGB uint8 ``[H, W, 3]``, its presentation time in the stream's time
    base (counted from the first frame; invented at the average rate where the file gives none)."""
    av = _av()
    step = 1 / (info.rate * info.time_base)
    with _open_input(Path(path)) as c:
        last, i = None, 0
        try:
            for i, frame in enumerate(c.decode(video=0)):
                if frame.pts is None:
                    pts = int(round(last + step)) if last is not None else 0
                else:
                    pts = int(frame.pts) - info.start
                if last is not None and pts <= last:  # decoders can repeat a time; keep them strictly rising
                    pts = int(last) + 1
                last = pts
                yield pts, frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise AtelierError(f"{path}: decoding failed at frame {i} "
                               f"({getattr(e, 'strerror', None) or e})") from None


def output_format(out: Path, info: Optional[VideoInfo] = None) -> tuple[str, str]:
    """(muxer, video encoder) for ``out``'s extension, checking what this FFmpeg build has and whether the format
    keeps ``info``'s timing; a format it cannot write is one line."""
    av = _av()
    ext = out.suffix.lower()
    if ext not in FORMATS:
        raise AtelierError(f"cannot write {out.name}: atelier writes video as "
                           f"{', '.join(sorted(FORMATS))} (not {ext or 'a name without an extension'})")
    muxer, encoders, _, _, variable_ok = FORMATS[ext]
    found = [e for e in encoders if encoder_available(e)]
    if not found:
        raise AtelierError(f"cannot write {ext} here: this FFmpeg build (PyAV {av.__version__}) has none of its "
                           f"encoders ({', '.join(encoders)}); choose another format, e.g. .mkv")
    if info is not None and info.variable_rate and not variable_ok:
        raise AtelierError(f"{Path(info.path).name} has a variable frame rate (frames {info.min_interval * 1000:.1f} "
                           f"to {info.max_interval * 1000:.1f} ms apart) and {ext} keeps one fixed rate: write "
                           ".mp4, .mkv, .mov or .webm to keep its timing")
    return muxer, found[0]


def encoder_available(name: str) -> bool:
    av = _av()
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001 - PyAV raises several kinds for "unknown codec"
        return False


class ChunkWriter:
    """One chunk of stylised frames, lossless, at ``path`` (a ``.mkv``); ``close()`` makes it final."""

    def __init__(self, path: Path, width: int, height: int):
        av = _av()
        self.path, self.pts = path, []
        self.tmp = path.with_name(path.name + ".tmp")
        self._c = av.open(str(self.tmp), "w", format="matroska")
        self._s = self._c.add_stream(CHUNK_CODEC, rate=25)
        self._s.width, self._s.height, self._s.pix_fmt = width, height, "bgr0"

    def write(self, pts: int, rgb: np.ndarray) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = len(self.pts)  # the chunk's own count; the true times go in its JSON
        for packet in self._s.encode(frame.reformat(format="bgr0")):
            self._c.mux(packet)
        self.pts.append(int(pts))

    def close(self) -> None:
        for packet in self._s.encode(None):
            self._c.mux(packet)
        self._c.close()
        os.replace(self.tmp, self.path)
        with atomic_path(chunk_record(self.path)) as tmp:
            tmp.write_text(json.dumps({"frames": len(self.pts), "pts": self.pts}))

    def abort(self) -> None:
        try:
            self._c.close()
        except Exception:  # noqa: BLE001 - the chunk is thrown away; its own error is the one that matters
            pass
        self.tmp.unlink(missing_ok=True)


def chunk_record(path: Path) -> Path:
    return path.with_suffix(".json")


def read_chunk(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """The frames of a finished chunk with their presentation times."""
    av = _av()
    pts = json.loads(chunk_record(path).read_text())["pts"]
    with av.open(str(path), "r") as c:
        for t, frame in zip(pts, c.decode(video=0)):
            yield t, frame.to_ndarray(format="rgb24")


def assemble(chunks: Sequence[Path], info: VideoInfo, out: Path,
             resize: Callable[[np.ndarray, int, int], np.ndarray],
             progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Encode ``chunks`` in order into ``out`` at the input's size with its timestamps and audio; atomic."""
    av = _av()
    muxer, encoder = output_format(out, info)
    check_writable_parent(out)
    width, height = info.width + info.width % 2, info.height + info.height % 2  # 4:2:0 needs even sides
    audio_how = None
    try:
        with atomic_path(out) as tmp, _open_input(Path(info.path)) as src:
            with av.open(str(tmp), "w", format=muxer) as dst:
                vs = dst.add_stream(encoder, rate=info.rate, options=ENCODER_OPTIONS.get(encoder, {}))
                vs.width, vs.height = width, height
                vs.pix_fmt = "yuv420p"
                vs.codec_context.time_base = info.time_base
                audio = _AudioCopy(src, dst, out.suffix.lower(), info.origin) if info.audio else None
                audio_how = audio.how if audio else None
                n = 0
                for chunk in chunks:
                    for pts, rgb in read_chunk(chunk):
                        if rgb.shape[:2] != (height, width):
                            rgb = resize(rgb, height, width)
                        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                        frame.pts, frame.time_base = pts, info.time_base
                        if audio:
                            audio.until(float(pts * info.time_base))
                        for packet in vs.encode(frame):
                            dst.mux(packet)
                        n += 1
                        if progress:
                            progress(n)
                for packet in vs.encode(None):
                    dst.mux(packet)
                if audio:
                    audio.until(float("inf"))
                    audio.flush()
    except OSError as e:
        full = disk_full(e, str(out))
        if full:
            raise full from None
        raise
    except av.FFmpegError as e:
        raise AtelierError(f"cannot encode {out.name} with {encoder} "
                           f"({getattr(e, 'strerror', None) or e})") from None
    return {"encoder": encoder, "container": muxer, "frames": n, "audio": audio_how,
            "size": [width, height]}


class _AudioCopy:
    """The input's first audio stream into the output, interleaved with the video by time: copied packet by packet
    where the container takes its codec, else decoded and re-encoded with the container's audio encoder."""

    def __init__(self, src, dst, ext: str, origin: float):
        av = _av()
        self.origin = origin  # the video's first frame is the output's time zero
        self.a = next(s for s in src.streams if s.type == "audio")
        _, _, takes, fallback, _ = FORMATS[ext]
        name = self.a.codec_context.name
        self.copy = ext == ".mkv" or name in takes
        if self.copy:
            self.out = dst.add_stream_from_template(self.a)
            self.how = f"copied ({name})"
        else:
            rate = self.a.codec_context.sample_rate or 48000
            if fallback == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.out = dst.add_stream(fallback, rate=rate)
            layout = self.a.codec_context.layout.name if self.a.codec_context.layout else "stereo"
            self.out.layout = layout if layout in ("mono", "stereo") else "stereo"
            cc = self.out.codec_context
            self.resampler = av.AudioResampler(format=cc.format.name if cc.format else "fltp", layout=self.out.layout,
                                               rate=rate, frame_size=cc.frame_size or None)
            self.how = f"re-encoded {name} as {fallback}"
        self.dst = dst
        self._packets = src.demux(self.a)
        self._pending = None
        self._done = False

    def until(self, seconds: float) -> None:
        """Write audio up to ``seconds``."""
        while not self._done:
            p = self._pending or next(self._packets, None)
            self._pending = None
            if p is None:
                self._done = True
                break
            if p.dts is None and p.size == 0:
                continue
            t = float((p.pts if p.pts is not None else p.dts or 0) * p.time_base) - self.origin
            if t > seconds:
                self._pending = p
                break
            if t >= 0:  # audio from before the first frame has no picture to go with
                self._write(p)

    def _write(self, packet) -> None:
        if self.copy:
            shift = int(round(self.origin / packet.time_base))
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.out
            self.dst.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for f in self.resampler.resample(frame):
                for q in self.out.encode(f):
                    self.dst.mux(q)

    def flush(self) -> None:
        if self.copy:
            return
        for f in self.resampler.resample(None):
            for q in self.out.encode(f):
                self.dst.mux(q)
        for q in self.out.encode(None):
            self.dst.mux(q)
