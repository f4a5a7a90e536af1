from gcl_eval.cli import main

main()
