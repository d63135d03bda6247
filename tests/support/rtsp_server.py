#!/usr/bin/env python3
"""A tiny RTSP server for the camera tests: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0) serving a moving test pattern as H.264 at rtsp://127.0.0.1:PORT/cam.

    /usr/bin/python3 tests/support/rtsp_server.py PORT [WIDTHxHEIGHT] [FPS]

Prints "rtsp server ready on PORT" once it listens; SIGTERM / SIGKILL stop it (the tests kill it
mid-stream on purpose and start it again on the same port).
"""
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port = sys.argv[1] if len(sys.argv) > 1 else "8554"
    width, height = (sys.argv[2] if len(sys.argv) > 2 else "160x120").split("x")
    fps = sys.argv[3] if len(sys.argv) > 3 else "10"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1 ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"rtsp server cannot listen on {port}", flush=True)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"rtsp server ready on {port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
