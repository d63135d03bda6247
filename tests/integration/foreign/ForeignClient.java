// A client of kadr in another language than kadr's own: Java, with Apache Kafka's official
// client. It follows docs/protocol.md only: publishes one JPEG frame to a frames topic (key =
// stream id, headers kadr-frame-id, kadr-seq, content-type), then reads kadr.results until
// the result for that frame id arrives and prints it as "result: <json>".
//
//   java -cp '<kafka libs>/*' ForeignClient.java BOOTSTRAP FRAMES_TOPIC FRAME_ID IMAGE.jpg
//
// Run by kafka_pipeline_test (FrameFromAJavaProducerIsAnsweredToAJavaConsumer).
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

public class ForeignClient {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    String frameId = args[2];
    byte[] jpeg = Files.readAllBytes(Path.of(args[3]));

    Properties c = new Properties();
    c.put("bootstrap.servers", bootstrap);
    c.put("group.id", "foreign-java-" + UUID.randomUUID());
    c.put("auto.offset.reset", "earliest");
    c.put("key.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
    c.put("value.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
    try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
      consumer.subscribe(List.of("kadr.results"));

      Properties p = new Properties();
      p.put("bootstrap.servers", bootstrap);
      p.put("acks", "all");
      p.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
      p.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
      try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(p)) {
        ProducerRecord<String, byte[]> frame = new ProducerRecord<>(topic, "java-cam", jpeg);
        frame.headers().add("kadr-frame-id", frameId.getBytes(StandardCharsets.UTF_8));
        frame.headers().add("kadr-seq", "1".getBytes(StandardCharsets.UTF_8));
        frame.headers().add("content-type", "image/jpeg".getBytes(StandardCharsets.UTF_8));
        producer.send(frame).get();
      }

      long deadline = System.currentTimeMillis() + 90_000;
      String needle = "\"id\":\"" + frameId + "\"";
      while (System.currentTimeMillis() < deadline) {
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
          if (r.value() != null && r.value().contains(needle)) {
            System.out.println("result: " + r.value());
            return;
          }
        }
      }
    }
    System.err.println("no result for " + frameId + " within 90 s");
    System.exit(1);
  }
}
