// A TCP proxy standing for the load balancer in front of Confab: the test
// cuts every connection through it (a lost network), then lets
// connections through again, possibly to another gateway.
import { createServer, connect } from "node:net";

export async function startProxy(target) {
  let to = new URL(target);
  let up = true;
  const open = new Set();
  const server = createServer((client) => {
    if (!up) return client.destroy();
    const upstream = connect(Number(to.port), to.hostname);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Drops every connection and refuses new ones. */
    cut() {
      up = false;
      for (const s of open) s.destroy();
      open.clear();
    },
    /** Lets connections through again, to `target` if given. */
    restore(target) {
      if (target) to = new URL(target);
      up = true;
    },
    close() {
      this.cut();
      server.close();
    },
  };
}
