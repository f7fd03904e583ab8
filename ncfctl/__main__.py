from ncfctl.cli.app import main

main()
