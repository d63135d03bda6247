#!/usr/bin/env python3
"""An HTTP server that a hostile stream source would point FFmpeg at (the stream-source
tests of issue 16): a mostly printable text page such as an admin endpoint or a cloud
metadata service answers, and a redirect.

    hostile_http_server.py PORT [REDIRECT_URL]      -> http://127.0.0.1:PORT/<path>

    /redirect...  302 to REDIRECT_URL
    anything else 200 text/plain: about 4 KB of /etc/passwd-like lines, which FFmpeg's tty
                  demuxer would render as a readable video frame (e.g. "/x?x=.txt")

Prints "ready" once it listens and "GET <path>" for each request. Stops on SIGTERM/SIGINT."""
import http.server
import sys

port = int(sys.argv[1])
redirect = sys.argv[2] if len(sys.argv) > 2 else ""
TEXT = "".join(f"user{i}:x:{1000 + i}:{1000 + i}:Secret User {i}:/home/user{i}:/bin/bash\n"
               for i in range(64)).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET " + self.path, flush=True)
        if self.path.startswith("/redirect") and redirect:
            self.send_response(302)
            self.send_header("Location", redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(TEXT)))
        self.end_headers()
        self.wfile.write(TEXT)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
