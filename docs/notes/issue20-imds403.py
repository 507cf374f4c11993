import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def _r(self):
        body=b'<?xml version="1.0"?><Error><Code>Forbidden</Code></Error>'
        self.send_response(403); self.send_header("Content-Type","text/html"); self.send_header("Content-Length",str(len(body))); self.end_headers(); self.wfile.write(body)
    do_GET=_r; do_PUT=_r
    def log_message(self,*a): pass
http.server.HTTPServer(("127.0.0.1",int(sys.argv[1])),H).serve_forever()
