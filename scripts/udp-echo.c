/* A UDP server for orch's tests: answers every datagram on the given port (default 53) with
 * "<hostname> <sender address>\n". Built static into the image orch-test/udp-echo:1 by
 * scripts/build-test-images.sh (no registry: the tests make their images themselves). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 53;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("bind");
        return 1;
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    for (;;) {
        char buf[2048];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0) {
            continue;
        }
        char reply[400];
        int n = snprintf(reply, sizeof reply, "%s %s\n", host, inet_ntoa(peer.sin_addr));
        sendto(fd, reply, (size_t)n, 0, (struct sockaddr *)&peer, len);
    }
}
