import { createHash } from 'node:crypto'
import type { Readable, Writable } from 'node:stream'
import { finished, pipeline } from 'node:stream/promises'
import type { ReadEntry } from 'tar'
import { z } from 'zod'
import {
  CAPTURE_CHANGES_ENTRY, CAPTURE_HEADER_ENTRY, CAPTURE_PACKAGES_ENTRY, CapturePathError, MalformedCaptureError, MAX_CAPTURE_CHANGES,
  MAX_CAPTURE_HEADER_BYTES, MAX_CAPTURE_LINE_BYTES, MAX_CAPTURE_REQUIRED_PACKAGES, captureChangeSchema, captureHeaderSchema,
  capturePathProblem, carriesContent, checkCaptureRoots, comparePaths, contentEntryOf, requiredPackageSchema,
  type CaptureChange, type CaptureCounts, type CaptureHeader, type RequiredPackage
} from './capture.js'

export interface CaptureReadHandlers {
  /** The header, before anything else; throw to stop reading (e.g. another OS). */
  onHeader?: (header: CaptureHeader) => void
  /** Each change, checked against the format and the roots, in order. */
  onChange?: (change: CaptureChange, index: number) => void
  onRequiredPackage?: (pkg: RequiredPackage) => void
  /** Where to write the content of a changed file; it is hashed on the way and checked against the change. */
  contentSink?: (change: CaptureChange, index: number) => Writable | undefined
}

export interface CaptureReadResult {
  header: CaptureHeader
  changes: number
  requiredPackages: number
  contentEntries: number
}

/** Tar entry types that carry no content of their own; node-tar consumes them. */
const IGNORED_TYPES = new Set(['GlobalExtendedHeader', 'ExtendedHeader', 'NextFileHasLongPath', 'NextFileHasLongLinkpath', 'OldGnuLongPath'])
const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile'])

function parseJson<T> (schema: z.ZodType<T>, text: string, what: string): T {
  let decoded: unknown
  try {
    decoded = JSON.parse(text)
  } catch {
    throw new MalformedCaptureError(`${what} is not JSON`)
  }
  const parsed = schema.safeParse(decoded)
  if (!parsed.success) throw new MalformedCaptureError(`${what}: ${z.prettifyError(parsed.error)}`)
  return parsed.data
}

/** Splits a stream of text into lines of bounded length. */
class LineSplitter {
  private rest = ''
  constructor (private readonly what: string, private readonly onLine: (line: string) => void) {}
  push (chunk: Buffer): void {
    const text = this.rest + chunk.toString('utf8')
    const lines = text.split('\n')
    this.rest = lines.pop() ?? ''
    if (this.rest.length > MAX_CAPTURE_LINE_BYTES) throw new MalformedCaptureError(`a line of ${this.what} is longer than ${MAX_CAPTURE_LINE_BYTES} bytes`)
    for (const line of lines) if (line !== '') this.onLine(line)
  }

  end (): void {
    if (this.rest !== '') this.onLine(this.rest)
    this.rest = ''
  }
}

interface ExpectedContent { change: CaptureChange, index: number }

/**
 * Reads a capture package as a stream and checks everything a device or the
 * coordinator can check without looking at a device: the entry order, the
 * header, every change (format, paths normalised and under the captured
 * roots, in walk order without repeats), the counts the header claims, and
 * the content of every changed file (its entry name, size and SHA-256). Any
 * departure throws MalformedCaptureError or CapturePathError; a caller that
 * writes content through `contentSink` discards it when reading fails.
 */
export async function readCaptureArchive (input: Readable, handlers: CaptureReadHandlers = {}, options: { signal?: AbortSignal } = {}): Promise<CaptureReadResult> {
  // tar loads with the first capture archive read: an agent that never reads one never loads it.
  const { Parser } = await import('tar')
  let header: CaptureHeader | undefined
  type Stage = 'header' | 'changes' | 'packages' | 'content'
  let stage = 'header' as Stage
  let changes = 0
  let requiredPackages = 0
  let contentEntries = 0
  let previousPath: string | undefined
  const counts: CaptureCounts = { added: 0, modified: 0, removed: 0, metadata: 0, contentBytes: 0, requiredPackages: 0 }
  const expected: ExpectedContent[] = []
  let nextExpected = 0
  const pending: Array<Promise<void>> = []
  const sinks: Writable[] = []
  let failure: Error | undefined

  const fail = (error: unknown): void => {
    failure ??= error instanceof Error ? error : new Error(String(error))
    input.destroy()
  }

  const onChangeLine = (line: string): void => {
    const change = parseJson(captureChangeSchema, line, `change ${changes + 1}`)
    const problem = capturePathProblem(change.path, header!.roots)
    if (problem !== undefined) throw new CapturePathError(change.path, problem)
    if (previousPath !== undefined && comparePaths(previousPath, change.path) >= 0) throw new MalformedCaptureError(`change ${change.path} is out of order or repeated (after ${previousPath})`)
    previousPath = change.path
    if (++changes > MAX_CAPTURE_CHANGES) throw new MalformedCaptureError(`more than ${MAX_CAPTURE_CHANGES} changes`)
    counts[change.op === 'add' ? 'added' : change.op === 'modify' ? 'modified' : change.op === 'remove' ? 'removed' : 'metadata']++
    if (carriesContent(change)) {
      counts.contentBytes += change.size ?? 0
      expected.push({ change, index: changes - 1 })
    }
    handlers.onChange?.(change, changes - 1)
  }

  const onPackageLine = (line: string): void => {
    const pkg = parseJson(requiredPackageSchema, line, `required package ${requiredPackages + 1}`)
    if (++requiredPackages > MAX_CAPTURE_REQUIRED_PACKAGES) throw new MalformedCaptureError(`more than ${MAX_CAPTURE_REQUIRED_PACKAGES} required packages`)
    counts.requiredPackages++
    handlers.onRequiredPackage?.(pkg)
  }

  const readText = (entry: ReadEntry, what: string, maxBytes: number, onDone: (text: string) => void): void => {
    const pieces: Buffer[] = []
    let size = 0
    entry.on('data', (chunk: Buffer) => {
      size += chunk.byteLength
      if (size > maxBytes) return fail(new MalformedCaptureError(`${what} is larger than ${maxBytes} bytes`))
      pieces.push(chunk)
    })
    entry.on('end', () => { if (failure === undefined) run(() => { onDone(Buffer.concat(pieces).toString('utf8')) }) })
  }

  const readLines = (entry: ReadEntry, what: string, onLine: (line: string) => void): void => {
    const splitter = new LineSplitter(what, onLine)
    entry.on('data', (chunk: Buffer) => { if (failure === undefined) run(() => { splitter.push(chunk) }) })
    entry.on('end', () => { if (failure === undefined) run(() => { splitter.end() }) })
  }

  const run = (step: () => void): void => {
    try {
      step()
    } catch (error) {
      fail(error)
    }
  }

  const readContent = (entry: ReadEntry): void => {
    const next = expected[nextExpected]
    if (next === undefined) throw new MalformedCaptureError(`archive entry ${JSON.stringify(entry.path)} is not the content of any change`)
    const { change, index } = next
    if (entry.path !== contentEntryOf(change.path)) throw new MalformedCaptureError(`archive entry ${JSON.stringify(entry.path)} comes where the content of ${change.path} belongs`)
    if (entry.size !== change.size) throw new MalformedCaptureError(`the content of ${change.path} has ${entry.size} bytes, its change says ${change.size}`)
    nextExpected++
    contentEntries++
    const sink = handlers.contentSink?.(change, index)
    if (sink !== undefined) sinks.push(sink)
    const hash = createHash('sha256')
    entry.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      if (sink !== undefined && !sink.write(chunk)) {
        entry.pause()
        sink.once('drain', () => { entry.resume() })
      }
    })
    pending.push(new Promise<void>((resolve, reject) => {
      entry.on('end', () => {
        const sha256 = hash.digest('hex')
        if (sha256 !== change.sha256) {
          sink?.destroy()
          reject(new MalformedCaptureError(`the content of ${change.path} hashes to ${sha256}, its change says ${change.sha256}`))
          return
        }
        if (sink === undefined) return resolve()
        sink.end()
        finished(sink).then(resolve, reject)
      })
    }).catch(error => { fail(error) }))
  }

  const onEntry = (entry: ReadEntry): void => {
    if (failure !== undefined || IGNORED_TYPES.has(entry.type)) {
      entry.resume()
      return
    }
    try {
      if (!FILE_TYPES.has(entry.type)) throw new MalformedCaptureError(`archive entry ${JSON.stringify(entry.path)} is a ${entry.type}; a capture package holds files only (links and folders are changes)`)
      switch (stage) {
        case 'header':
          if (entry.path !== CAPTURE_HEADER_ENTRY) throw new MalformedCaptureError(`not a capture package: the first entry is ${JSON.stringify(entry.path)}, not ${CAPTURE_HEADER_ENTRY}`)
          stage = 'changes'
          readText(entry, CAPTURE_HEADER_ENTRY, MAX_CAPTURE_HEADER_BYTES, text => {
            const parsed = parseJson(captureHeaderSchema, text, 'the capture header')
            checkCaptureRoots(parsed.roots)
            header = parsed
            handlers.onHeader?.(parsed)
          })
          return
        case 'changes':
          if (entry.path !== CAPTURE_CHANGES_ENTRY) throw new MalformedCaptureError(`the second entry is ${JSON.stringify(entry.path)}, not ${CAPTURE_CHANGES_ENTRY}`)
          stage = 'packages'
          readLines(entry, CAPTURE_CHANGES_ENTRY, onChangeLine)
          return
        case 'packages':
          if (entry.path !== CAPTURE_PACKAGES_ENTRY) throw new MalformedCaptureError(`the third entry is ${JSON.stringify(entry.path)}, not ${CAPTURE_PACKAGES_ENTRY}`)
          stage = 'content'
          readLines(entry, CAPTURE_PACKAGES_ENTRY, onPackageLine)
          return
        case 'content':
          readContent(entry)
      }
    } catch (error) {
      entry.resume()
      fail(error)
    }
  }

  const parser = new Parser({ strict: true, onReadEntry: onEntry })
  const abort = (): void => { fail(options.signal?.reason ?? new Error('aborted')) }
  options.signal?.addEventListener('abort', abort, { once: true })
  try {
    await pipeline(input, parser)
  } catch (error) {
    if (failure === undefined) failure = new MalformedCaptureError(`the capture package cannot be read: ${(error as Error).message}`, { cause: error })
  } finally {
    options.signal?.removeEventListener('abort', abort)
  }
  // A stream cut inside a file never ends that file: its content is abandoned, not awaited.
  if (failure === undefined) await Promise.all(pending)
  if (failure !== undefined) {
    for (const sink of sinks) sink.destroy()
    throw failure
  }
  if (header === undefined) throw new MalformedCaptureError(`not a capture package: it has no ${CAPTURE_HEADER_ENTRY}`)
  const reached = stage as Stage
  if (reached !== 'content') throw new MalformedCaptureError(`the capture package ends before its ${reached === 'packages' ? CAPTURE_PACKAGES_ENTRY : CAPTURE_CHANGES_ENTRY}`)
  if (nextExpected < expected.length) throw new MalformedCaptureError(`the content of ${expected[nextExpected].change.path} is missing (${expected.length - nextExpected} file(s) in all)`)
  for (const key of Object.keys(counts) as Array<keyof CaptureCounts>) {
    if (counts[key] !== header.counts[key]) throw new MalformedCaptureError(`the header counts ${header.counts[key]} ${key}, the package holds ${counts[key]}`)
  }
  return { header, changes, requiredPackages, contentEntries }
}
