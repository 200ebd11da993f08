import { randomFillSync, randomUUID } from "node:crypto";

/**
 * A new job's id: a random (version 4) UUID. Not `uuidv7()`, measured: with
 * time-ordered ids a batch claim's 50 jobs sit on the same heap pages, and
 * the claim's and the report's updates of those rows no longer all fit on
 * their pages: about a fifth of the job updates were not HOT (9,230 of
 * 11,400) and the WAL per one-step job of claim 50 + reportMany rose from
 * 1.15 to 1.46 KB (PostgreSQL 15, fsync on, 10,000 jobs, one loop; twice
 * each). Time-ordered ids come with the rebuilt data model, whose job rows
 * are not updated (packages/schema/docs/data-model.md).
 */
export function newJobId(): string {
  return randomUUID();
}

/**
 * A version 7 UUID (RFC 9562): 48 bits of Unix time in milliseconds, then
 * the version, a 12-bit sequence, the variant and 62 random bits: ids that
 * sort by creation time, for keys that grow at their right edge and history
 * range-partitioned by id. Job ids are not made with it yet (`newJobId`).
 *
 * Monotonic within a process (RFC 9562 method 3): ids made in the same
 * millisecond count up in the 12-bit sequence, which starts at a random
 * value below 2,048 each millisecond; should it overflow, or the clock step
 * back, the id borrows the next millisecond. Ids of several processes in
 * the same millisecond interleave (their order is then arbitrary), and
 * remain unique by their 62 random bits.
 */
export function uuidv7(now: number = Date.now()): string {
  let ms = now;
  if (ms > lastMs) {
    lastMs = ms;
    seq = randomSeq();
  } else {
    ms = lastMs;
    seq += 1;
    if (seq > 0xfff) {
      lastMs += 1;
      ms = lastMs;
      seq = randomSeq();
    }
  }
  const bytes = randomFillSync(buffer);
  // 48-bit big-endian milliseconds.
  const high = Math.floor(ms / 0x10000);
  bytes[0] = (high >>> 24) & 0xff;
  bytes[1] = (high >>> 16) & 0xff;
  bytes[2] = (high >>> 8) & 0xff;
  bytes[3] = high & 0xff;
  bytes[4] = (ms >>> 8) & 0xff;
  bytes[5] = ms & 0xff;
  bytes[6] = 0x70 | (seq >>> 8);
  bytes[7] = seq & 0xff;
  bytes[8] = 0x80 | ((bytes[8] as number) & 0x3f);
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The creation time in a version 7 UUID (milliseconds since the epoch). */
export function uuidv7Time(id: string): number {
  return Number.parseInt(id.replaceAll("-", "").slice(0, 12), 16);
}

const buffer = Buffer.alloc(16);
let lastMs = -1;
let seq = 0;

function randomSeq(): number {
  return (randomFillSync(seqBuffer).readUInt16BE(0) & 0x7ff) as number;
}
const seqBuffer = Buffer.alloc(2);
