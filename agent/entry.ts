// The agent's own entry point: `meshdeploy agent …` and the packaged
// `meshdeploy-agent`. It loads the agent's commands only: no operator CLI,
// no coordinator, and libp2p only once the mesh starts.
import '../protocol/polyfill.js'
import { agentCommand } from './cli.js'

/** Runs the agent's commands as `name` with the process's arguments (`argv` as in process.argv). */
export async function runAgentCommand (name: string, argv: string[] = process.argv): Promise<void> {
  try {
    await agentCommand().name(name).parseAsync(argv)
  } catch (error) {
    process.stderr.write(`${name}: ${(error as Error).message}\n`)
    process.exitCode = 2
  }
}
