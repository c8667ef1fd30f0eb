'use strict'
// Prints the include directory to use for standalone Asio, for binding.gyp.
// ASIO_INCLUDE_DIR wins; otherwise the usual system prefixes are searched.
// When Asio is missing it fails with one line that says how to install it.
const fs = require('fs')
const path = require('path')

const systemDirs = ['/usr/include', '/usr/local/include', '/opt/homebrew/include', '/opt/local/include']
const fromEnv = process.env.ASIO_INCLUDE_DIR
const candidates = fromEnv ? [fromEnv] : systemDirs
const found = candidates.find((dir) => fs.existsSync(path.join(dir, 'asio.hpp')))

if (!found) {
  const where = fromEnv ? `ASIO_INCLUDE_DIR=${fromEnv} has no asio.hpp` : 'standalone Asio headers not found'
  process.stderr.write(
    `nexres-rpc: ${where}; install them with \`apt-get install libasio-dev\` (Debian/Ubuntu) or \`brew install asio\` (macOS), or set ASIO_INCLUDE_DIR\n`
  )
  process.exit(1)
}
// -I of a compiler's own system directory breaks #include_next in libstdc++;
// those are searched anyway, so name a harmless directory instead.
const isSystem = found === '/usr/include' || found === '/usr/local/include'
process.stdout.write(isSystem ? path.join(__dirname, '..', 'native', 'core') : found)
