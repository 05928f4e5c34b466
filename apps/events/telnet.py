"""Minimal telnet option handling for a browser console (RFC 854/855), enough for CML PATty and device telnet
servers: the device's negotiation is stripped from what the browser sees and answered so that the device
echoes and suppresses go-ahead (`WILL ECHO`/`WILL SGA` get `DO`); every other option is refused
(`DO x` → `WONT x`, `WILL x` → `DONT x`). Subnegotiations (`SB ... SE`) are dropped; `IAC IAC` is a literal 255.
State is kept across reads: a sequence may be split between two TCP segments.
"""

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA = 1, 3
ACCEPTED = frozenset({ECHO, SGA})


class TelnetFilter:
    def __init__(self):
        self.state = "data"  # data | iac | option | sb | sb_iac
        self.verb = 0

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        """(bytes for the terminal, bytes to answer the device with)."""
        out, reply = bytearray(), bytearray()
        for byte in chunk:
            if self.state == "data":
                if byte == IAC:
                    self.state = "iac"
                else:
                    out.append(byte)
            elif self.state == "iac":
                if byte == IAC:
                    out.append(IAC)
                    self.state = "data"
                elif byte in (DO, DONT, WILL, WONT):
                    self.verb, self.state = byte, "option"
                elif byte == SB:
                    self.state = "sb"
                else:  # NOP, GA, AYT, ...: a command without an option
                    self.state = "data"
            elif self.state == "option":
                if self.verb == DO:
                    reply += bytes((IAC, WONT, byte))
                elif self.verb == WILL:
                    reply += bytes((IAC, DO if byte in ACCEPTED else DONT, byte))
                self.state = "data"
            elif self.state == "sb":
                if byte == IAC:
                    self.state = "sb_iac"
            elif self.state == "sb_iac":
                self.state = "data" if byte == SE else "sb"
        return bytes(out), bytes(reply)


def escape(data: bytes) -> bytes:
    """What the user typed, for a telnet peer: a literal 255 doubled."""
    return data.replace(b"\xff", b"\xff\xff")
