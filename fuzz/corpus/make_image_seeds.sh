#!/usr/bin/env bash
# Makes the image_decode seed corpus: tiny images (8x6) in every format and sample layout
# imaging/decode.h reads, plus a few hostile headers derived from them. Run once; its output
# is checked in (fuzz/corpus/image_decode/), so CI does not need to run it. Needs ffmpeg
# (a test package of scripts/setup-debian.sh) and python3.
#
#   fuzz/corpus/make_image_seeds.sh
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/image_decode"
mkdir -p "$out"



src=(-f lavfi -i "testsrc2=size=8x6:rate=1" -frames:v 1)
ff() { ffmpeg -hide_banner -loglevel error -y "${src[@]}" "$@"; }
ff -pix_fmt yuvj420p -q:v 5 "$out/rgb.jpg"
ff -pix_fmt gray -q:v 5 "$out/gray.jpg"
ff -pix_fmt yuvj444p -q:v 5 "$out/yuv444.jpg"
ff -pix_fmt rgb24 "$out/rgb.png"
ff -pix_fmt rgba "$out/rgba.png"
ff -pix_fmt gray16be "$out/gray16.png"
ff -pix_fmt rgb48be "$out/rgb48.png"
ff -pix_fmt pal8 "$out/palette.png"
ff -pix_fmt ya8 "$out/gray_alpha.png"
ff -pix_fmt bgr24 "$out/rgb.bmp"
ff -pix_fmt bgra "$out/bgra.bmp"
ff -c:v libwebp -lossless 1 "$out/lossless.webp"
ff -c:v libwebp -quality 50 "$out/lossy.webp"
ff -pix_fmt rgb24 -compression_algo raw "$out/rgb.tiff"
ff -pix_fmt rgb48le -compression_algo deflate "$out/rgb48.tiff"
ff -pix_fmt gray -compression_algo packbits "$out/gray.tiff"

python3 - "$out" <<'EOF'
import struct, sys, zlib, pathlib
out = pathlib.Path(sys.argv[1])
jpg = (out / "rgb.jpg").read_bytes()

# EXIF orientation 6 (rotate 90 CW): an APP1 segment right after SOI.
ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
app1 = b"Exif\x00\x00" + tiff
(out / "exif_orientation6.jpg").write_bytes(
    jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])

# An Adobe APP14 marker (the CMYK convention) on a plain JPEG.
app14 = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)
(out / "adobe_app14.jpg").write_bytes(
    jpg[:2] + b"\xff\xee" + struct.pack(">H", len(app14) + 2) + app14 + jpg[2:])

# A "bomb": the SOF0 header says 60000x60000 (limits must refuse it before decoding).
sof = jpg.index(b"\xff\xc0")
bomb = bytearray(jpg)
bomb[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
(out / "bomb_60000.jpg").write_bytes(bytes(bomb))

# Truncated: half the file.
(out / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])

# A PNG whose IHDR says 100000x1 (valid CRC), over max_side.
png = (out / "rgb.png").read_bytes()
ihdr = bytearray(png[16:29])
ihdr[0:8] = struct.pack(">II", 100000, 1)
crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
(out / "bomb_wide.png").write_bytes(png[:16] + bytes(ihdr) + crc + png[33:])
EOF
ls -l "$out"
