import { Command } from 'commander'

/** Names a user can type after `words` (already typed): subcommands and options of the deepest command reached. */
export function completions (root: Command, words: string[]): string[] {
  let command = root
  for (const word of words) {
    if (word.startsWith('-')) continue
    const next = command.commands.find(candidate => candidate.name() === word || candidate.aliases().includes(word))
    if (next === undefined) continue
    command = next
  }
  const subcommands = command.commands.filter(candidate => !(candidate as any)._hidden).map(candidate => candidate.name())
  const options = command.options.filter(option => !option.hidden).flatMap(option => [option.long, option.short]).filter((name): name is string => name !== undefined)
  return [...subcommands, ...options, ...(command === root ? [] : ['--help'])]
}

const SCRIPTS: Record<string, string> = {
  bash: `# meshdeploy completion for bash: source this file, e.g. from ~/.bashrc:
#   source <(meshdeploy completion bash)
_meshdeploy() {
  local IFS=$'\\n'
  COMPREPLY=( $(compgen -W "$(meshdeploy __complete "\${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "\${COMP_WORDS[COMP_CWORD]}") )
}
complete -o default -F _meshdeploy meshdeploy
`,
  zsh: `# meshdeploy completion for zsh: add to ~/.zshrc:
#   source <(meshdeploy completion zsh)
autoload -U +X bashcompinit && bashcompinit
_meshdeploy() {
  local IFS=$'\\n'
  COMPREPLY=( $(compgen -W "$(meshdeploy __complete "\${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "\${COMP_WORDS[COMP_CWORD]}") )
}
complete -o default -F _meshdeploy meshdeploy
`,
  fish: `# meshdeploy completion for fish: save as ~/.config/fish/completions/meshdeploy.fish
complete -c meshdeploy -f -a '(meshdeploy __complete (commandline -opc)[2..-1])'
`
}

/** `meshdeploy completion SHELL` prints a script; the script asks the hidden `__complete` command, so it follows the installed version. */
export function completionCommands (): Command[] {
  const completion = new Command('completion')
    .description('print a shell completion script (bash, zsh or fish)')
    .argument('<shell>', 'bash, zsh or fish')
    .addHelpText('after', '\nExample:\n  source <(meshdeploy completion bash)')
    .action((shell: string) => {
      const script = SCRIPTS[shell]
      if (script === undefined) {
        process.stderr.write(`error: no completion for ${shell}; choose bash, zsh or fish\n`)
        process.exitCode = 2
        return
      }
      process.stdout.write(script)
    })
  const complete = new Command('__complete')
    .argument('[words...]')
    .allowUnknownOption()
    .helpOption(false)
    .action(function (this: Command, words: string[]) {
      let root: Command = this
      while (root.parent !== null) root = root.parent
      process.stdout.write(completions(root, words).join('\n') + '\n')
    })
  return [completion, complete]
}
