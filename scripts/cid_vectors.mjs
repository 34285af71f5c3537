// Regenerate tests/fixtures/cid_vectors.json with the reference UnixFS importer.
//
// Usage: node scripts/cid_vectors.mjs [output.json]
//
// The inputs are rebuilt from a rule (no big files in git): "shake256" inputs are
// the first `size` bytes of SHAKE-256(SEED), "zeros" inputs are `size` zero bytes.
// tests/test_cid.py derives the same bytes in Python and must get the same CIDs.
// Options {cidVersion: 1, rawLeaves: true} with the importer's defaults (262,144-byte
// chunks, balanced layout, 174 links per node) are what Kubo's `ipfs add --cid-version=1`
// does.
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'

const SEED = 'lethe/cid-vectors'
const CHUNK = 262_144
const MAX_LINKS = 174

const CASES = [
  ['empty', 'shake256', 0],
  ['one byte', 'shake256', 1],
  ['small', 'shake256', 1000],
  ['one chunk minus one byte', 'shake256', CHUNK - 1],
  ['exactly one chunk', 'shake256', CHUNK],
  ['one chunk plus one byte', 'shake256', CHUNK + 1],
  ['several chunks', 'shake256', 5 * CHUNK + 12_345],
  ['repeated identical chunks', 'zeros', 3 * CHUNK + 5],
  ['one full level of links', 'shake256', MAX_LINKS * CHUNK],
  ['two tree levels', 'shake256', MAX_LINKS * CHUNK + 1],
  ['two tree levels, partial second child', 'shake256', (MAX_LINKS + 3) * CHUNK + 7]
]

function inputBytes (pattern, size) {
  if (pattern === 'zeros') return new Uint8Array(size)
  return new Uint8Array(createHash('shake256', { outputLength: size }).update(SEED).digest())
}

async function importOnce (data) {
  const blockstore = new MemoryBlockstore()
  let root
  for await (const entry of importer([{ content: data }], blockstore, { cidVersion: 1, rawLeaves: true })) {
    root = entry
  }
  let blocks = 0
  for await (const _ of blockstore.getAll()) blocks++ // eslint-disable-line no-unused-vars
  return { cid: root.cid.toString(), blocks }
}

const vectors = []
for (const [name, pattern, size] of CASES) {
  const { cid, blocks } = await importOnce(inputBytes(pattern, size))
  vectors.push({ name, pattern, size, cid, blocks })
  console.error(`${name}: ${size} bytes -> ${cid} (${blocks} blocks)`)
}

const out = {
  generator: 'scripts/cid_vectors.mjs with ipfs-unixfs-importer@17.1.1 {cidVersion: 1, rawLeaves: true}',
  seed: SEED,
  rule: 'shake256: the first `size` bytes of SHAKE-256(seed as UTF-8); zeros: `size` zero bytes',
  vectors
}
writeFileSync(process.argv[2] ?? 'tests/fixtures/cid_vectors.json', JSON.stringify(out, null, 2) + '\n')
