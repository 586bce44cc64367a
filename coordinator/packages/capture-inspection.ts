import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import { CaptureSummaryBuilder, readCaptureArchive, type CaptureSummary } from '../../protocol/index.js'

/**
 * Reads a capture package as it is uploaded, chunk by chunk, and checks it
 * whole (format, paths, counts, every file's hash) while building the summary
 * operators review before distributing it: counts, top folders, removals,
 * the system packages it needs. Memory stays bounded whatever its size.
 */
export class CaptureInspection {
  private readonly input = new PassThrough()
  private builder?: CaptureSummaryBuilder
  private readonly result: Promise<CaptureSummary>
  private failed = false

  constructor () {
    this.result = readCaptureArchive(this.input, {
      onHeader: header => { this.builder = new CaptureSummaryBuilder(header) },
      onChange: change => { this.builder!.addChange(change) },
      onRequiredPackage: pkg => { this.builder!.addRequiredPackage(pkg) }
    }).then(() => this.builder!.summary())
    this.result.catch(() => { this.failed = true })
  }

  /** Feeds the next piece of the package; waits while the reader is behind. */
  async write (bytes: Uint8Array): Promise<void> {
    if (this.failed || this.input.destroyed) return
    if (!this.input.write(bytes)) await Promise.race([once(this.input, 'drain'), once(this.input, 'close')])
  }

  /** The summary once the whole package was fed; throws MalformedCaptureError or CapturePathError for a package that breaks the format. */
  async finish (): Promise<CaptureSummary> {
    if (!this.input.destroyed) this.input.end()
    return await this.result
  }

  abort (): void {
    this.input.destroy()
  }
}
