// Copies the socket event types generated from the Rust types
// (libs/events/typescript/socket-events.ts, the one definition) into the
// package's sources before `tsc`. The copy is not checked in.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const from = join(here, "..", "..", "..", "libs", "events", "typescript", "socket-events.ts");
const to = join(here, "..", "src", "generated", "socket-events.ts");
mkdirSync(dirname(to), { recursive: true });
copyFileSync(from, to);
