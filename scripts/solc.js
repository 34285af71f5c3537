#!/usr/bin/env node
// The pinned solc-js (npm `solc`) behind the two flags of the native `solc` that
// py-solc-x uses: `--version`, and `--standard-json` (JSON in on stdin, JSON out on stdout).
// No native solc is needed and nothing is downloaded.
'use strict';

const solc = require('solc');

const args = process.argv.slice(2);

if (args.includes('--version')) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
} else if (args.includes('--standard-json')) {
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => {
    // No import callback: the build passes every source inline, so nothing is read from disk.
    process.stdout.write(solc.compile(Buffer.concat(chunks).toString('utf8')));
  });
} else {
  process.stderr.write('usage: solc.js --version | --standard-json < input.json\n');
  process.exit(2);
}
