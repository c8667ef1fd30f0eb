// Every test file type-checks under strict, and every @ts-expect-error in
// them marks a real error: the type-level promises of the public API (typed
// services, error classes, options) are written as code in the tests
// (client-services.test.ts, arguments.test.ts, ...) and checked here.
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

t.test('the test files, with their type-level checks, compile under strict', async (t) => {
  const { default: ts } = await import('typescript')
  const dir = dirname(fileURLToPath(import.meta.url))
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f))
  t.ok(files.length > 20, `${files.length} files`)
  const program = ts.createProgram(files, {
    noEmit: true,
    strict: true,
    noUnusedLocals: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts'],
    types: ['node'],
    skipLibCheck: true,
  })
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file === undefined || d.file.fileName.includes('/test/'))
  const text = diags.map((d) => {
    const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined
    return `${d.file?.fileName ?? ''}:${where ? where.line + 1 : '?'}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
  })
  t.same(text, [], 'no type errors (and every @ts-expect-error is an error)')
})
