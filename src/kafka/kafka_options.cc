#include "kafka/kafka_bus.h"

namespace kadr::kafka {

bool IsSecretProperty(const std::string& key) {
  return key.find("password") != std::string::npos || key.find("secret") != std::string::npos ||
         key.find("sasl.oauthbearer.config") != std::string::npos ||
         key.find(".pem") != std::string::npos;
}

}  // namespace kadr::kafka
