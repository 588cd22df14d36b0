#!/usr/bin/env python3
"""A minimal SMTP sink on 127.0.0.1:10025, the relay Dovecot's submission service needs.

Accepts everything (EHLO with PIPELINING, 8BITMIME, SIZE, CHUNKING, DSN,
SMTPUTF8, ENHANCEDSTATUSCODES) and throws the messages away.  Only for the
differential runner: ``python sink.py [PORT] &``.
"""

from __future__ import annotations

import asyncio
import sys


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 sink ESMTP\r\n")
    in_data = False
    chunk_left = 0
    try:
        while True:
            if chunk_left:
                await reader.readexactly(chunk_left)
                chunk_left = 0
                writer.write(b"250 2.0.0 chunk\r\n")
                continue
            line = await reader.readline()
            if not line:
                break
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"LHLO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n250-CHUNKING\r\n"
                             b"250-DSN\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go\r\n")
            elif verb == b"BDAT":
                chunk_left = int(line.split()[1])
                if chunk_left == 0:
                    writer.write(b"250 2.0.0 chunk\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                break
            else:
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(session, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10025))
