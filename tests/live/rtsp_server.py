"""A real RTSP server for the tests: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0), run by the *system* python3 (PyGObject lives there, not in the venv).

    /usr/bin/python3 tests/live/rtsp_server.py PORT [SECONDS] [tcp|udp|tcp+udp]

Serves ``rtsp://127.0.0.1:PORT/live`` (loopback only): a live 25 fps 64x48 test pattern, JPEG
over RTP, over UDP or TCP as the client asks.  Prints ``READY`` once it listens and exits after
SECONDS (default 120), so a test that forgets it cannot leave it running for long.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=64,height=48,framerate=25/1 "
            "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )")


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    protocols = sys.argv[3] if len(sys.argv) > 3 else "tcp+udp"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    lower = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
             "tcp+udp": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP}[protocols]
    factory.set_protocols(lower)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        sys.exit(2)
    loop = GLib.MainLoop()
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    print("READY", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
