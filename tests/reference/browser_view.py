"""Drives a real headless Chromium at the browser view, for tests/outputs.rs (not a reference: a browser to look with).

Usage: python3 browser_view.py CHROMIUM URL SCREENSHOT.png

Talks to Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so nothing beyond the standard library is
needed. Prints `fps <text>` (the page's FPS figure) every 0.25 s; a line `shot` on stdin takes a
screenshot of the page into SCREENSHOT.png, prints `shot`, and ends. Gives up after 90 s.
"""

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def wire():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--window-size=1000,500", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire,  # kept open after wire() put the pipes there
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def call(self, method, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url):
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def text_of(self, element_id):
        result = self.call("Runtime.evaluate", returnByValue=True,
                           expression=f"(document.getElementById('{element_id}') || {{}}).textContent || ''")
        return result["result"].get("value", "")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.session = None
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main():
    chromium, url, shot = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(chromium, profile)
        try:
            browser.open(url)
            deadline = time.time() + 90
            while time.time() < deadline:
                print("fps", browser.text_of("fps"), flush=True)
                ready, _, _ = select.select([sys.stdin], [], [], 0.25)
                if ready and sys.stdin.readline().strip() == "shot":
                    browser.screenshot(shot)
                    print("shot", flush=True)
                    return 0
            print("gave up after 90 s", flush=True)
            return 1
        finally:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
