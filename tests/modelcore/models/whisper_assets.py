"""Real speech for the Whisper tests and benchmark: Debian's Asterisk prompts with their transcripts.

``asterisk-core-sounds-en-wav`` holds 568 English prompts read by one speaker (8 kHz 16-bit mono WAV), and
``asterisk-core-sounds-en`` their transcripts (``core-sounds-en.txt``: ``name: text`` per line). Both are
fetched with ``apt-get download`` (Debian is a reachable registry here; ``apt-get update`` is run once if the
package lists lack them), checked against pinned sha256 digests, and unpacked with the standard library
(``ar`` + ``data.tar.xz``) into ``<modelcore cache>/assets/asterisk-sounds-en/``; a marker written last makes
later calls free. The converted Whisper tiny.en folder is cached beside it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelcore import assets
from modelcore.feature_extraction import load_wav

PACKAGES = {
    "asterisk-core-sounds-en-wav": ("1.6.1-1", "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d"),
    "asterisk-core-sounds-en": ("1.6.1-1", "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50"),
}
SOUNDS_PREFIX = "./usr/share/asterisk/sounds/en_US_f_Allison/"
TRANSCRIPTS_MEMBER = "./usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
MARKER = ".complete"

# Short prompts (2-6 s) with plain transcripts, for the tests; and one prompt longer than 30 s (two windows).
TEST_CLIPS = (
    "cannot-complete-as-dialed",
    "conf-now-recording",
    "confbridge-only-participant",
    "enter-num-blacklist",
    "pls-hold-while-try",
    "vm-msgforwarded",
)
LONG_CLIP = "priv-callee-options"


@dataclass(frozen=True)
class Clip:
    """One prompt: its name, samples (float32 in [-1, 1]) at ``sampling_rate``, and its transcript."""

    name: str
    audio: np.ndarray
    sampling_rate: int
    text: str


def sounds_dir() -> Path:
    """The unpacked prompts (``<name>.wav``, sub-folders ``digits/``, ``letters/``...) and ``transcripts.txt``."""
    dest = assets.cache_dir() / "assets" / "asterisk-sounds-en"
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".asterisk-sounds-en.", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent) as download:
            debs = {name: _download(name, Path(download)) for name in PACKAGES}
            _unpack(debs["asterisk-core-sounds-en-wav"], SOUNDS_PREFIX, staging)
            _unpack(debs["asterisk-core-sounds-en"], TRANSCRIPTS_MEMBER, staging)
        (staging / MARKER).write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def transcripts() -> dict[str, str]:
    """Prompt name -> transcript, from ``core-sounds-en.txt``."""
    text = gzip.decompress((sounds_dir() / "core-sounds-en.txt.gz").read_bytes()).decode("utf-8")
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith(";"))
    return {name.strip(): sentence.strip() for name, sentence in pairs}


def load_clip(name: str) -> Clip:
    """The prompt ``name`` (e.g. ``"vm-msgforwarded"`` or ``"digits/2"``) with its transcript."""
    audio, rate = load_wav(sounds_dir() / f"{name}.wav")
    return Clip(name, audio, rate, transcripts()[name])


def benchmark_clips(count: int = 24) -> list[Clip]:
    """``count`` prompts spread over the catalogue: plain transcripts of at least four words, up to 30 s."""
    texts = transcripts()
    root = sounds_dir()
    names = sorted(
        n
        for n, t in texts.items()
        if "[" not in t and len(t.split()) >= 4 and "/" not in n and (root / f"{n}.wav").is_file()
    )
    picked = [load_clip(n) for n in names]
    picked = [c for c in picked if len(c.audio) <= 30 * c.sampling_rate]
    step = max(1, len(picked) // count)
    return picked[::step][:count]


def converted_whisper_dir() -> Path:
    """The whisper-tiny-en asset converted to the Hugging Face layout (float32), cached."""
    from modelcore.models.whisper.convert_ctranslate2 import converted_asset

    return converted_asset("whisper-tiny-en")


def _download(package: str, directory: Path) -> Path:
    version, sha256 = PACKAGES[package]
    command = ["apt-get", "download", f"{package}={version}"]
    proc = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a fresh machine's package lists may not know the package yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        proc = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    debs = list(directory.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise RuntimeError(f"`{' '.join(command)}` failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{debs[0].name}: sha256 {digest} differs from the pinned {sha256}")
    return debs[0]


def _unpack(deb: Path, member: str, dest: Path) -> None:
    """Extract ``member`` (a folder prefix ending in / or one file) of a .deb's data.tar.xz into ``dest``, flat."""
    data = _ar_member(deb, "data.tar.xz")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        for info in tar.getmembers():
            if not info.isfile() or not info.name.startswith(member):
                continue
            relative = info.name[len(member) :] if member.endswith("/") else Path(info.name).name
            if relative.startswith("/") or ".." in Path(relative).parts:
                raise RuntimeError(f"{deb.name}: unsafe path {info.name!r}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(info).read())


def _ar_member(deb: Path, name: str) -> bytes:
    """One member of a Debian package (an ``ar`` archive: 8-byte magic, then 60-byte headers + data)."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb}: not an ar archive")
    offset = 8
    while offset + 60 <= len(raw):
        header = raw[offset : offset + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        if member == name:
            return raw[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)  # members are 2-byte aligned
    raise RuntimeError(f"{deb}: no member {name!r}")
