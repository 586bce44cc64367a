import test from 'ava'
import { MeshdeployError } from '../../protocol/index.js'
import { FrameTooLargeError, StreamResetError, TruncatedFrameError } from '../../agent/protocols/frames.js'
import { MalformedPieceMessageError, PieceNotHeldError, PieceRefusedError, PieceStalledError } from '../../agent/protocols/chunk/index.js'
import { HaveQueueFullError, MalformedHaveMessageError } from '../../agent/protocols/have/index.js'
import { MalformedStatusMessageError, StatusMessageTooLargeError } from '../../agent/protocols/status/index.js'
import { PeerNotConnectedError } from '../../agent/p2p/network.js'
import { BufferReleasedTwiceError } from '../../agent/download/buffer-pool.js'

test('wire errors belong to the project\'s error family: a name and a stable reason', t => {
  const cases: Array<[Error, string, string]> = [
    [new FrameTooLargeError(10, 5), 'FrameTooLargeError', 'frame-too-large'],
    [new TruncatedFrameError('cut'), 'TruncatedFrameError', 'truncated-frame'],
    [new StreamResetError('reset'), 'StreamResetError', 'stream-reset'],
    [new PieceRefusedError('busy'), 'PieceRefusedError', 'piece-refused'],
    [new MalformedPieceMessageError('bad'), 'MalformedPieceMessageError', 'malformed-answer'],
    [new PieceStalledError(1000, 8192), 'PieceStalledError', 'stalled'],
    [new PieceNotHeldError('absent'), 'PieceNotHeldError', 'not-cached'],
    [new MalformedHaveMessageError('bad'), 'MalformedHaveMessageError', 'malformed-have-message'],
    [new HaveQueueFullError(3), 'HaveQueueFullError', 'have-queue-full'],
    [new MalformedStatusMessageError('bad'), 'MalformedStatusMessageError', 'malformed-status-message'],
    [new StatusMessageTooLargeError(10, 5), 'StatusMessageTooLargeError', 'status-message-too-large'],
    [new PeerNotConnectedError('peer'), 'PeerNotConnectedError', 'peer-not-connected'],
    [new BufferReleasedTwiceError(), 'BufferReleasedTwiceError', 'buffer-released-twice']
  ]
  for (const [error, name, reason] of cases) {
    t.true(error instanceof MeshdeployError, name)
    t.is(error.name, name)
    t.is((error as MeshdeployError).reason, reason)
  }
  t.is(new PieceRefusedError('rate-limited', { retryAfterMs: 5 }).retryAfterMs, 5)
})
