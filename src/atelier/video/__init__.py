"""Video: stylise a clip with any one-pass method, without flicker.

| module | what |
|---|---|
| ``io.py`` | PyAV: probe, decode, lossless chunks, the final encode with the input's audio and timing |
| ``flow.py`` | OpenCV optical flow (DIS, Farnebäck), warping, forward-backward occlusion, the warping error |
| ``temporal.py`` | stabilisers: frame by frame, moving average (the peer's), flow-warped blend (ours) |
| ``pipeline.py`` | ``stylize_video``: streaming, chunked, resumable |
| ``synthetic.py`` | clips with known motion (pan and zoom over a photo) and a small encoder for tests |

Needs the ``[video]`` extra (``av``, ``opencv-python-headless``); importing this package imports neither.
"""

from .pipeline import stylize_video

__all__ = ["stylize_video"]
