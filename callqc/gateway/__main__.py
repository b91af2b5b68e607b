from callqc.gateway.server import main

main()
