/** A have/interest message that does not decode. */
export class MalformedHaveMessageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MalformedHaveMessageError'
  }
}

/** The peer does not take announcements as fast as they come. */
export class HaveQueueFullError extends Error {
  constructor (queued: number) {
    super(`${queued} announcements are waiting for a peer that does not read them`)
    this.name = 'HaveQueueFullError'
  }
}
