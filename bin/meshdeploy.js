#!/usr/bin/env node
// Entry point of the `meshdeploy` command: the operator's commands and the agent's.
// `meshdeploy agent …` loads the agent alone: a device never loads the operator
// CLI or the coordinator.
if (process.argv[2] === 'agent') {
  const { runAgentCommand } = await import('../dist/agent/entry.js')
  await runAgentCommand('meshdeploy agent', [...process.argv.slice(0, 2), ...process.argv.slice(3)])
} else {
  await import('../dist/protocol/polyfill.js')
  const { operatorProgram } = await import('../dist/coordinator/cli/program.js')
  const { addExamples } = await import('../dist/coordinator/cli/examples.js')
  const { agentCommand } = await import('../dist/agent/cli.js')
  const program = operatorProgram()
  program.addCommand(agentCommand())
  addExamples(program)
  await program.parseAsync(process.argv)
}
