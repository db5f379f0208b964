"""A fake camera for headless Chromium: a Y4M file (``--use-file-for-fake-video-capture``).

Chromium's built-in fake device is 640x480, too small for three simulcast layers (libwebrtc
sends three only from about 960x540 up), so simulcast tests feed it a 1280x720 clip with
motion everywhere (a moving pattern under fixed noise, and a moving square), which keeps
the encoder busy on every layer. Chromium loops the clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_y4m(path: Path, width: int = 1280, height: int = 720, frames: int = 30) -> Path:
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7).integers(0, 16, (height, width), dtype=np.uint8)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            luma = ((cols + rows + i * 12) % 256).astype(np.uint8) ^ noise
            left = (i * 20) % (width - 200)
            luma[200:400, left : left + 200] = 255 - luma[200:400, left : left + 200]
            u = np.full((height // 2, width // 2), (i * 3) % 256, np.uint8)
            v = np.full((height // 2, width // 2), 128, np.uint8)
            out.write(b"FRAME\n" + luma.tobytes() + u.tobytes() + v.tobytes())
    return path
