from orzbob.cli.main import main

main()
