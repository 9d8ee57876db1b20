# bash completion for erofs-vmdk                                  -*- shell-script -*-
# Installed as share/bash-completion/completions/erofs-vmdk. The option lists follow each
# command's --help (scripts/check-package.sh checks a few completions).

_erofs_vmdk() {
  local cur prev words cword
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  words=("${COMP_WORDS[@]}")
  cword=$COMP_CWORD

  # The command path so far: the first non-option words after the program name.
  local command="" sub="" i
  for ((i = 1; i < cword; i++)); do
    case ${words[i]} in
      -*) ;;
      *)
        if [[ -z $command ]]; then
          command=${words[i]}
        elif [[ -z $sub ]]; then
          case $command in
            guest | verity) sub=${words[i]} ;;
            hook) [[ ${words[i]} == cleanup ]] && sub=cleanup ;;
          esac
        fi
        ;;
    esac
  done

  # Values of options that take one.
  case $prev in
    --mode) COMPREPLY=($(compgen -W "auto raw flat gpt" -- "$cur")); return ;;
    --order) COMPREPLY=($(compgen -W "top-first bottom-first" -- "$cur")); return ;;
    --verity)
      if [[ $command != verify ]]; then
        COMPREPLY=($(compgen -W "off auto on" -- "$cur"))
        return
      fi
      ;;
    --digest) COMPREPLY=($(compgen -W "sha256" -- "$cur")); return ;;
    --disk-id) COMPREPLY=($(compgen -W "serial gpt-guid" -- "$cur")); return ;;
    --hash) COMPREPLY=($(compgen -W "sha256 sha512" -- "$cur")); return ;;
    --format)
      if [[ $command == compose ]]; then
        COMPREPLY=($(compgen -W "vmdk raw auto" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "1 0" -- "$cur"))
      fi
      return
      ;;
    --disk-format) COMPREPLY=($(compgen -W "vmdk raw auto" -- "$cur")); return ;;
    --attach) COMPREPLY=($(compgen -W "blk pmem" -- "$cur")); return ;;
    --dax-fallback) COMPREPLY=($(compgen -W "error warn" -- "$cur")); return ;;
    -o | --output | -b | --base | --state-dir | -r | --rootfs | -c | --cgroup)
      if [[ $prev != -o || $command != verity ]]; then
        COMPREPLY=($(compgen -d -- "$cur"))
        return
      fi
      ;;
    -s | --storages | --mounts | --expect | --write-expect | --hash-device | --policy)
      COMPREPLY=($(compgen -f -- "$cur"))
      return
      ;;
    --first-fdset | --serial | --id | -i | --timeout-ms | --parallel | --kill-timeout-ms | \
      --threads | --chunk-size | --queue-depth | --at | --hash-offset | --salt | --uuid | \
      --data-block-size | --hash-block-size | --verity-algorithm | --root-hash | --max-upper-bytes | \
      --pmem-pci-addr)
      return
      ;;
  esac

  local commands="compose lint map inspect verify verity hook guest"
  local options="" subcommands="" files=1
  case $command in
    "") COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur")); return ;;
    compose) options="--mode --order -o --output --fdset --first-fdset --serial --verity --format --allow-copy --attach --dax-fallback --pmem-pci-addr --disk-id --json -q --quiet" ;;
    lint) options="--json -q --quiet" ;;
    map) options="--json --at" ;;
    inspect) options="--json" ;;
    verify) options="--digest --expect --write-expect --direct --verity --trust-descriptor --json -q --quiet --threads --chunk-size --queue-depth" ;;
    hook)
      if [[ $sub == cleanup ]]; then
        options="--id --state-dir --json -q --quiet"
      else
        options="--id --state-dir --mounts --verity --disk-format --allow-copy --attach --dax-fallback --disk-id --json -q --quiet"
        subcommands="cleanup"
      fi
      files=0
      ;;
    guest)
      files=0
      case $sub in
        "") subcommands="mount teardown status" ;;
        mount) options="-s --storages -i --id -r --rootfs -b --base --timeout-ms --parallel --policy --require-verity --verity-algorithm --root-hash --max-upper-bytes --json -q --quiet" ;;
        teardown) options="-i --id -r --rootfs -b --base -c --cgroup --kill-timeout-ms --json -q --quiet" ;;
        status) options="-i --id -b --base --json" ;;
      esac
      ;;
    verity)
      case $sub in
        "") subcommands="format show open check close list"; files=0 ;;
        format) options="--hash-offset --salt --uuid --hash --data-block-size --hash-block-size --format --threads --no-sidecar --force --json -q --quiet" ;;
        show) options="--check --json" ;;
        open | check) options="--hash-device -o --option --json -q --quiet" ;;
        close) files=0 ;;
        list) options="--json"; files=0 ;;
      esac
      ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$options --help" -- "$cur"))
  elif [[ -n $subcommands ]]; then
    COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
  elif ((files)); then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _erofs_vmdk -o filenames erofs-vmdk
