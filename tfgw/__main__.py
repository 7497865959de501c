from tfgw.cli import main

main()
