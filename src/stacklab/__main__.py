from stacklab.cli import main

main()
