import { MeshdeployError } from '../../../protocol/errors.js'
/** A have/interest message that does not decode. */
export class MalformedHaveMessageError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'malformed-have-message')
    this.name = 'MalformedHaveMessageError'
  }
}

/** The peer does not take announcements as fast as they come. */
export class HaveQueueFullError extends MeshdeployError {
  constructor (queued: number) {
    super(`${queued} announcements are waiting for a peer that does not read them`, 'have-queue-full')
    this.name = 'HaveQueueFullError'
  }
}
