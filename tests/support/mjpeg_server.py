#!/usr/bin/env python3
"""A small HTTP MJPEG camera for tests: serves the JPEG files of a folder, in name order and
looping, as multipart/x-mixed-replace at a given frame rate, to any number of clients.

    mjpeg_server.py PORT FOLDER [FPS]      -> http://127.0.0.1:PORT/<any path>

Prints "ready" once it listens. Stops on SIGTERM/SIGINT."""
import http.server
import os
import sys
import time

port, folder = int(sys.argv[1]), sys.argv[2]
fps = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
frames = [open(os.path.join(folder, n), "rb").read()
          for n in sorted(os.listdir(folder)) if n.endswith(".jpg")]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            i = 0
            while True:
                jpeg = frames[i % len(frames)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
                i += 1
                time.sleep(1.0 / fps)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
