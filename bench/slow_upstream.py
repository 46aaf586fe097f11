"""A lean OpenAI-style upstream for the slow scenarios: python bench/slow_upstream.py PORT

The demo component builds every SSE event with json.dumps under gunicorn; at 1,000 streams x 10
chunks/s that costs a large share of this 2-core machine, which the gateway and the load
generator share. This asyncio server sends prepared bytes instead, so the slow scenarios measure
the gateway rather than the upstream's own CPU. Both the direct and the gateway runs use it.

Same headers as the demo component: X-Demo-Delay (seconds before answering), and for a body with
"stream": true, X-Demo-Chunks and X-Demo-Interval.
"""

import asyncio
import json
import sys

USAGE = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "demo-chat",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }
).encode()


def event(data: dict) -> bytes:
    line = b"data: " + json.dumps(data).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(line), line)


FIRST = event(
    {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
)
WORD = event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "word "}}]})
LAST = (
    event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + event({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
    + b"e\r\ndata: [DONE]\n\n\r\n"
    + b"0\r\n\r\n"
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            delay = float(headers.get(b"x-demo-delay", b"0"))
            if delay:
                await asyncio.sleep(delay)
            if b'"stream": true' in body or b'"stream":true' in body:
                chunks = int(headers.get(b"x-demo-chunks", b"10"))
                interval = float(headers.get(b"x-demo-interval", b"0.05"))
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + FIRST
                )
                for _ in range(chunks):
                    await asyncio.sleep(interval)
                    writer.write(WORD)
                writer.write(LAST)
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(ANSWER), ANSWER)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
