#!/usr/bin/env node
// Entry point of the `meshdeploy` command: the operator's commands and the agent's.
import '../dist/protocol/polyfill.js'
import { operatorProgram } from '../dist/coordinator/cli/program.js'
import { addExamples } from '../dist/coordinator/cli/examples.js'
import { agentCommand } from '../dist/agent/cli.js'

const program = operatorProgram()
program.addCommand(agentCommand())
addExamples(program)
await program.parseAsync(process.argv)
