// Writes a synthetic sample picture (a test card) for the first-run demo on machines that
// have no photos: `kadr detect` runs end to end on it, though it contains no real objects.
// Usage: make_sample_image OUTPUT.png
#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT.png\n", argv[0]);
    return 2;
  }
  cv::Mat img(480, 640, CV_8UC3);
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>(x * 255 / img.cols),
                                          static_cast<uchar>(y * 255 / img.rows), 160);
    }
  }
  cv::circle(img, {160, 240}, 80, {40, 40, 220}, cv::FILLED, cv::LINE_AA);
  cv::rectangle(img, {360, 160}, {560, 320}, {230, 230, 230}, cv::FILLED);
  cv::putText(img, "kadr sample", {190, 440}, cv::FONT_HERSHEY_SIMPLEX, 1.5, {255, 255, 255}, 3,
              cv::LINE_AA);
  return cv::imwrite(argv[1], img) ? 0 : 1;
}
