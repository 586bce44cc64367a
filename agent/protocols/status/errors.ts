import { MeshdeployError } from '../../../protocol/errors.js'
/** A status gossip message that does not decode or is out of shape. */
export class MalformedStatusMessageError extends MeshdeployError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'malformed-status-message', options)
    this.name = 'MalformedStatusMessageError'
  }
}

/** A message that would be larger than MAX_MESSAGE_BYTES. */
export class StatusMessageTooLargeError extends MeshdeployError {
  readonly sizeBytes: number
  constructor (sizeBytes: number, maxBytes: number) {
    super(`a status message of ${sizeBytes} bytes is larger than ${maxBytes}`, 'status-message-too-large')
    this.name = 'StatusMessageTooLargeError'
    this.sizeBytes = sizeBytes
  }
}
