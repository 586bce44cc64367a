// A test-only agent: the real agent, except that every piece it serves to a
// peer has its first byte flipped. It exists so tests can show that peers
// detect and ban a corrupt peer. Nothing in the product can turn this on:
// the hook is reachable only through this entry point, which is not shipped.
import '../../protocol/polyfill.js'
import { Command } from 'commander'
import { agentCommand } from '../../agent/cli.js'
import type { PieceSource } from '../../agent/protocols/chunk/index.js'

const corrupt = (source: PieceSource): PieceSource => ({
  readPiece: async (request, options) => {
    const bytes = Uint8Array.from(await source.readPiece(request, options))
    bytes[0] ^= 0xff
    return bytes
  }
})

const program = new Command('meshdeploy-corrupting-agent')
program.addCommand(agentCommand({ mesh: { servePieces: corrupt } }))
await program.parseAsync(process.argv)
