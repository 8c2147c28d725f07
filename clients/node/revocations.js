"use strict";
/**
 * User revocations held in memory, 16 bytes a user: the twin of authsvc/revocations.py.
 *
 * A user is keyed by the first 8 bytes of SHA-256 of its id, a big-endian signed 64-bit integer (the stream sends
 * it in decimal), kept here as two 32-bit halves: `hi` (signed) and `lo` (unsigned), which order the same way.
 */

const { userHash } = require("./tokens");

const MEMO_SIZE = 4096;
const TWO_32 = 2n ** 32n;

/** A user hash (decimal text, BigInt or number) as a BigInt, checked to be a signed 64-bit integer. */
function hashOf(value) {
  const hash = BigInt(value);
  if (BigInt.asIntN(64, hash) !== hash) throw new RangeError("a user hash out of the signed 64-bit range");
  return hash;
}

function halves(hash) {
  return { hi: Number(hash >> 32n), lo: Number(BigInt.asUintN(32, hash)) };
}

/** A revocation time in microseconds (decimal text, BigInt or number) as a Number. */
function timeOf(value) {
  const time = Number(value);
  if (!Number.isSafeInteger(time)) throw new RangeError("a revocation time out of range");
  return time;
}

/**
 * User revocations of one app: user hash → revoked-before (micros). Sorted typed arrays hold the bulk; recent
 * changes sit in a small Map (null marks a removal) merged into the arrays once it grows past a sixty-fourth of
 * them, so a change costs O(1) amortized. Answers for the users last asked about are remembered by user id until
 * the set changes.
 */
class RevocationSet {
  /**
   * @param {Iterable<string | bigint>} hashes user hashes (ascending, as a snapshot sends them; sorted otherwise)
   * @param {Iterable<string | bigint | number>} times their revocation times, in the same order
   */
  constructor(hashes = [], times = []) {
    const builder = new RevocationSetBuilder();
    builder.add(Array.from(hashes), Array.from(times));
    builder._into(this);
  }

  /** A builder that takes a snapshot's revocations chunk by chunk (converted as they come: 16 bytes a user). */
  static builder() {
    return new RevocationSetBuilder();
  }

  /**
   * No user's revocation time is later than this (micros; -Infinity when none is held): a token issued at or after
   * it is revoked by none of them, so that no user need be looked up. Tokens verified as soon as they are issued
   * (a login, a connection) mostly are.
   */
  get newest() {
    return this._newest;
  }

  /**
   * The user's revocation time (micros) when it may revoke a token issued at `issuedAt`, else null: a token issued
   * after every revocation held costs no look-up at all. `remember` as for getUser. The twin of Python's
   * RevocationSet.revoking.
   */
  revoking(userId, issuedAt, remember = true) {
    return issuedAt >= this._newest ? null : this.getUser(userId, remember);
  }

  /** The number of revoked users. */
  get size() {
    this._merge();
    return this._hi.length;
  }

  /** The revocation time of a user hash (BigInt or decimal text), or null. */
  get(hash) {
    const key = hashOf(hash);
    const { hi, lo } = halves(key);
    return this._get(key, hi, lo);
  }

  /**
   * The revocation time of a user (micros), or null. With `remember` (the default), the answer is remembered for
   * the last few thousand users asked about so; without, it is neither looked for nor kept there: for a user not
   * likely to be asked about again, the memo would cost more than it saves.
   */
  getUser(userId, remember = true) {
    if (this._hi.length === 0 && this._recent.size === 0) return null; // no revocation: no hash to compute
    const answers = this._answers;
    if (remember) {
      const known = answers.get(userId);
      if (known !== undefined) return known;
    }
    const { hi, lo } = userHash(userId);
    const answer = this._get(this._recent.size > 0 ? (BigInt(hi) << 32n) | BigInt(lo) : null, hi, lo);
    if (remember) {
      if (answers.size >= MEMO_SIZE) answers.clear();
      answers.set(userId, answer);
    }
    return answer;
  }

  /** Records a user's revocation time (as the server has it in force). */
  set(hash, revokedBefore) {
    this._answers.clear();
    const time = timeOf(revokedBefore);
    this._recent.set(hashOf(hash), time);
    if (time > this._newest) this._newest = time;
    this._maybeMerge();
  }

  /** Forgets a user's revocation. */
  remove(hash) {
    this._answers.clear();
    this._recent.set(hashOf(hash), null);
    this._maybeMerge();
  }

  _get(key, hi, lo) {
    if (key !== null) {
      const recent = this._recent.get(key);
      if (recent !== undefined) return recent;
    }
    const i = this._search(hi, lo, 0);
    return i < this._hi.length && this._hi[i] === hi && this._lo[i] === lo ? this._times[i] : null;
  }

  /** The first index from `start` whose hash is not below (hi, lo). */
  _search(hi, lo, start) {
    const his = this._hi;
    const los = this._lo;
    let low = start;
    let high = his.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (his[mid] < hi || (his[mid] === hi && los[mid] < lo)) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  _maybeMerge() {
    // A sixty-fourth: a merge copies the arrays, so the amortized cost stays O(1) a change, while the Map (far more
    // than 16 bytes an entry) stays small.
    if (this._recent.size > Math.max(1024, this._hi.length >> 6)) this._merge();
  }

  _merge() {
    if (this._recent.size === 0) return;
    const changes = [...this._recent].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const his = this._hi;
    const los = this._lo;
    const times = this._times;
    const capacity = his.length + changes.length;
    const mergedHi = new Int32Array(capacity);
    const mergedLo = new Uint32Array(capacity);
    const mergedTimes = new Float64Array(capacity);
    let n = 0;
    let start = 0;
    const copy = (from, to) => {
      mergedHi.set(his.subarray(from, to), n);
      mergedLo.set(los.subarray(from, to), n);
      mergedTimes.set(times.subarray(from, to), n);
      n += to - from;
    };
    for (const [key, value] of changes) {
      const { hi, lo } = halves(key);
      let i = this._search(hi, lo, start);
      copy(start, i);
      if (i < his.length && his[i] === hi && los[i] === lo) i++;
      if (value !== null) {
        mergedHi[n] = hi;
        mergedLo[n] = lo;
        mergedTimes[n] = value;
        n++;
      }
      start = i;
    }
    copy(start, his.length);
    this._hi = mergedHi.slice(0, n);
    this._lo = mergedLo.slice(0, n);
    this._times = mergedTimes.slice(0, n);
    this._recent = new Map();
    this._newest = newestOf(this._times); // a removal may have taken the newest
  }
}

function newestOf(times) {
  let newest = -Infinity;
  for (let i = 0; i < times.length; i++) if (times[i] > newest) newest = times[i];
  return newest;
}

/** Gathers the revocations of a snapshot, chunk by chunk; `build()` makes the set. */
class RevocationSetBuilder {
  constructor() {
    this._chunks = [];
    this._size = 0;
  }

  /** Adds a chunk: user hashes (decimal text or BigInt) and their revocation times, in the same order. */
  add(hashes, times) {
    const n = hashes.length;
    if (times.length !== n) throw new RangeError("as many revocation times as user hashes are needed");
    const hi = new Int32Array(n);
    const lo = new Uint32Array(n);
    const when = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const half = halves(hashOf(hashes[i]));
      hi[i] = half.hi;
      lo[i] = half.lo;
      when[i] = timeOf(times[i]);
    }
    this._chunks.push({ hi, lo, when });
    this._size += n;
    return this;
  }

  /** The set of everything added. */
  build() {
    const set = Object.create(RevocationSet.prototype);
    this._into(set);
    return set;
  }

  _into(set) {
    const n = this._size;
    let hi = new Int32Array(n);
    let lo = new Uint32Array(n);
    let times = new Float64Array(n);
    let at = 0;
    for (const chunk of this._chunks) {
      hi.set(chunk.hi, at);
      lo.set(chunk.lo, at);
      times.set(chunk.when, at);
      at += chunk.hi.length;
    }
    this._chunks = [];
    const below = (a, b) => hi[a] < hi[b] || (hi[a] === hi[b] && lo[a] < lo[b]);
    for (let i = 1; i < n; i++) {
      if (below(i, i - 1)) {
        // The server sends them in order; this only guards against one that does not.
        const order = Array.from({ length: n }, (_, index) => index).sort((a, b) => (below(a, b) ? -1 : below(b, a) ? 1 : 0));
        hi = Int32Array.from(order, (j) => hi[j]);
        lo = Uint32Array.from(order, (j) => lo[j]);
        times = Float64Array.from(order, (j) => times[j]);
        break;
      }
    }
    set._hi = hi;
    set._lo = lo;
    set._times = times;
    set._newest = newestOf(times);
    /** @type {Map<bigint, number | null>} */
    set._recent = new Map();
    /** @type {Map<string, number | null>} */
    set._answers = new Map();
  }
}

module.exports = { RevocationSet, hashOf };
