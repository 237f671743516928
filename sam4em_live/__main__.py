from sam4em_live.cli import main

main()
