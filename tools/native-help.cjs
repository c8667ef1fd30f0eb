'use strict'
// One message for a machine where no prebuilt binary matches and the addon
// cannot be built from source either, naming the platform, what is missing
// and how to install it (instead of node-gyp's "Could not find any Python").
// Used by tools/install.cjs (npm install) and lib/native.ts (loading).
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.join(__dirname, '..')
/** Platforms whose binaries the package ships (package.json "nexres.binaries"). */
const BINARIES = (() => {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).nexres.binaries
  } catch {
    return []
  }
})()

function libc() {
  if (process.platform !== 'linux') return ''
  const header = process.report && process.report.getReport ? process.report.getReport().header : {}
  return header && header.glibcVersionRuntime ? 'glibc' : 'musl'
}

/** e.g. linux-x64-glibc, darwin-arm64. */
function platformName() {
  const l = libc()
  return `${process.platform}-${process.arch}${l ? `-${l}` : ''}`
}

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

function asioFound() {
  const dirs = process.env.ASIO_INCLUDE_DIR ? [process.env.ASIO_INCLUDE_DIR] : ['/usr/include', '/usr/local/include', '/opt/homebrew/include', '/opt/local/include']
  return dirs.some((d) => fs.existsSync(path.join(d, 'asio.hpp')))
}

/** What a source build (node-gyp) needs and this machine lacks. */
function missingForSource() {
  const missing = []
  if (!['c++', 'g++', 'clang++'].some(has)) missing.push('a C++17 compiler (g++ or clang++)')
  if (!has('make')) missing.push('make')
  if (!['python3', 'python'].some(has)) missing.push('Python 3 (node-gyp runs on it)')
  if (!asioFound()) missing.push('the standalone Asio headers (or ASIO_INCLUDE_DIR)')
  return missing
}

function howToInstall() {
  if (process.platform === 'darwin') return '`xcode-select --install` and `brew install asio python`'
  if (fs.existsSync('/etc/alpine-release')) return '`apk add build-base python3 asio-dev`'
  if (fs.existsSync('/etc/debian_version')) return '`apt-get install build-essential python3 libasio-dev`'
  if (fs.existsSync('/etc/fedora-release') || fs.existsSync('/etc/redhat-release')) return '`dnf install gcc-c++ make python3 asio-devel`'
  return 'your system\'s C++ compiler, make, Python 3 and standalone Asio packages'
}

function message(missing) {
  return (
    `nexres-rpc: no prebuilt binary for ${platformName()} (the package ships binaries for ${BINARIES.join(', ') || 'no platform'}), ` +
    `and it cannot be built from source here: missing ${missing.join(', ')}. ` +
    `Install them with ${howToInstall()} and install nexres-rpc again, or run on a platform with binaries.`
  )
}

module.exports = { BINARIES, platformName, missingForSource, message }
