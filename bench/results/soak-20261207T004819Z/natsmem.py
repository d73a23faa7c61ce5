"""Which part of the soak's JetStream state makes nats-server's RSS grow?
Phase A: 30,000 KV keys (one per session, ~300 B each, like CONFAB_SESSIONS).
Phase B: 150,000 messages (no msg ids: the dedup map is not measured) of ~330 B on 444 subjects (like ROOMS for an hour).
RSS read after each phase (and after a 15 s pause for caches to expire)."""
import asyncio, os, subprocess, sys, tempfile, shutil, time
import nats
from nats.js.api import StreamConfig, StorageType, KeyValueConfig

NATS = sys.argv[1]; PORT = int(sys.argv[2]); BASE = sys.argv[3]

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) // 1024
async def main():
    sd = tempfile.mkdtemp(dir=BASE)
    p = subprocess.Popen([NATS, "-js", "-a", "127.0.0.1", "-p", str(PORT), "-sd", sd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                nc = await nats.connect(f"nats://127.0.0.1:{PORT}"); break
            except Exception:
                await asyncio.sleep(0.1)
        js = nc.jetstream()
        print("start MiB", rss(p.pid), flush=True)
        kv = await js.create_key_value(KeyValueConfig(bucket="S", history=1, ttl=86400, storage=StorageType.FILE))
        val = b"x" * 300
        for i in range(0, 30000, 500):
            await asyncio.gather(*(kv.put(f"pid{j:08d}xxxxxxxxxxxx", val) for j in range(i, i + 500)))
        print("after 30k KV keys MiB", rss(p.pid), flush=True)
        await asyncio.sleep(15); print("  +15 s MiB", rss(p.pid), flush=True)
        await js.add_stream(StreamConfig(name="R", subjects=["r.>"], storage=StorageType.FILE, max_age=86400, duplicate_window=120.0))
        body = b"y" * 330
        for i in range(0, 150000, 1000):
            await asyncio.gather(*(js.publish(f"r.{j % 444}", body, headers=None) for j in range(i, i + 1000)))
        print("after 150k stream msgs MiB", rss(p.pid), flush=True)
        await asyncio.sleep(15); print("  +15 s MiB", rss(p.pid), flush=True)
        await nc.close()
    finally:
        p.terminate(); p.wait(); shutil.rmtree(sd, ignore_errors=True)
asyncio.run(main())
