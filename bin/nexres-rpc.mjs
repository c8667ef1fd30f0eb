#!/usr/bin/env node
// nexres-rpc command line: the code is lib/cli/ (TypeScript), compiled to dist/cli/.
import '../dist/cli/main.js'
