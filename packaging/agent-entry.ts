// The packaged agent's entry point (meshdeploy-agent): only the agent's
// commands, so that the executable carries no coordinator, console or bench.
import { runAgentCommand } from '../agent/entry.js'

void runAgentCommand('meshdeploy-agent')
