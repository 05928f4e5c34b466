"""A fake device console on a loopback TCP port, for the browser-console tests and bench/consoles.py (the CML
simulator's PATty listeners do the same for a running lab's nodes).

It opens with a telnet negotiation (`IAC WILL ECHO`, `IAC WILL SGA`, as a telnet server does), a banner and
the prompt `<label>>`; then, per line received, it echoes the line, answers `show version` and `enable`
(prompt `<label>#`), and prints the prompt. It records the telnet answers it got (`answers`) and how many
connections are open (`open`). `count` ports serve the same console (`ports`). Runs its own event loop in a
thread; `stop()` closes every connection. `python -m simulators.console_device COUNT` runs one on its own.
"""

import asyncio
import threading

IAC, WILL, ECHO, SGA = 255, 251, 1, 3


class ConsoleDevice:
    def __init__(self, label: str = "router1", host: str = "127.0.0.1", *, count: int = 1):
        self.label, self.host, self.count = label, host, count
        self.port = 0  # the first of `ports`: each serves the same console
        self.ports: list[int] = []
        self.servers: list = []
        self.open = 0
        self.answers = bytearray()
        self.loop = asyncio.new_event_loop()
        self.writers: set = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=f"device-{label}")

    def start(self) -> "ConsoleDevice":
        self.thread.start()
        for _ in range(self.count):
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._serve, self.host, 0), self.loop).result(10)
            self.servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])
        self.port = self.ports[0]
        return self

    def stop(self) -> None:
        async def close():
            for server in self.servers:
                server.close()
            for writer in list(self.writers):
                writer.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _serve(self, reader, writer):
        self.open += 1
        self.writers.add(writer)
        prompt = f"{self.label}>"
        try:
            writer.write(bytes((IAC, WILL, ECHO, IAC, WILL, SGA)) + f"\r\n{self.label} console\r\n{prompt}".encode())
            buffer = b""
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                while chunk[:1] == bytes((IAC,)) and len(chunk) >= 3:  # the client's telnet answers
                    self.answers += chunk[:3]
                    chunk = chunk[3:]
                buffer += chunk
                while b"\r" in buffer or b"\n" in buffer:
                    cut = min(i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0)
                    line, buffer = buffer[:cut].decode(errors="replace").strip(), buffer[cut + 1:].lstrip(b"\n")
                    if line == "enable":
                        prompt, answer = f"{self.label}#", ""
                    elif line == "show version":
                        answer = f"Cisco IOS Software, {self.label} (simulated)\r\n"
                    else:
                        answer = f"{line}\r\n" if line else ""
                    writer.write(f"\r\n{answer}{prompt}".encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            self.open -= 1
            writer.close()


if __name__ == "__main__":  # bench/consoles.py: `python -m simulators.console_device COUNT` prints the ports
    import sys

    device = ConsoleDevice("router1", count=int(sys.argv[1]) if len(sys.argv) > 1 else 1).start()
    print(" ".join(map(str, device.ports)), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or kills us)
    device.stop()
