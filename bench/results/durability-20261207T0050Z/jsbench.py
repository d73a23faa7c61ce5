"""JetStream acked-publish throughput, default sync_interval vs always.

A stream like ROOMS (file storage, in.rooms.>, 2 min duplicate window);
WINDOW publishes in flight, each with a Nats-Msg-Id, ~200-byte bodies, for
SECS seconds; reports acked/s and ack latency percentiles.
"""
import asyncio, json, os, subprocess, sys, tempfile, time, shutil
import nats
from nats.js.api import StreamConfig, StorageType

NATS = sys.argv[1]; MODE = sys.argv[2]; PORT = int(sys.argv[3]); SECS = float(sys.argv[4]); WINDOW = int(sys.argv[5])
BASE = sys.argv[6]

async def run():
    sd = tempfile.mkdtemp(dir=BASE)
    conf = os.path.join(sd, "nats.conf")
    with open(conf, "w") as f:
        f.write("jetstream { sync_interval: always }\n" if MODE == "always" else "jetstream {}\n")
    p = subprocess.Popen([NATS, "-c", conf, "-js", "-a", "127.0.0.1", "-p", str(PORT), "-sd", sd],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                nc = await nats.connect(f"nats://127.0.0.1:{PORT}", connect_timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="ROOMS", subjects=["in.rooms.>"], storage=StorageType.FILE,
                                         duplicate_window=120.0))
        body = b'["message:new",{"id":"x","text":"' + b"a" * 150 + b'"}]'
        lats = []; n = 0; stop = time.monotonic() + SECS
        async def worker(w):
            nonlocal n
            i = 0
            while time.monotonic() < stop:
                t = time.monotonic()
                await js.publish(f"in.rooms.channel.r{w % 50}", body, headers={"Nats-Msg-Id": f"{w}-{i}"})
                lats.append(time.monotonic() - t); n += 1; i += 1
        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(WINDOW)))
        el = time.monotonic() - t0
        lats.sort()
        q = lambda x: round(lats[min(len(lats) - 1, int(x * len(lats)))] * 1000, 2)
        print(json.dumps({"mode": MODE, "window": WINDOW, "secs": round(el, 2), "acked": n,
                          "acked_per_sec": round(n / el, 1), "p50_ms": q(0.5), "p99_ms": q(0.99)}))
        await nc.close()
    finally:
        p.terminate(); p.wait(); shutil.rmtree(sd, ignore_errors=True)

asyncio.run(run())
